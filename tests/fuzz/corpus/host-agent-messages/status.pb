@
u-29
marathonweb.1*started0B
node-1-abcJhR˜ò˜òX