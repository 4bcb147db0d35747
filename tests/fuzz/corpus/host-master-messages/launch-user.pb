X
marathonL
db.3tô@"7
app:1(RbackendZ
/srv/db/datab/dataj1000p0è