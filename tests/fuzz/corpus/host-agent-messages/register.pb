
•

node-1-abcnode-1Ğ€ N*˜ò€ú"

rackr1*9
marathonweb.1*started0B
node-1-abcJhR˜ò˜òX0B0.1.0JdockerR0123456789abcdefX