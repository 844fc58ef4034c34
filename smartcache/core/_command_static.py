"""The built-in command table: used when ``COMMAND`` is unavailable or does not know a command.

Transcribed from the ``COMMAND`` reply of Valkey 9.1 (a superset of Redis 7.0's commands, with
the same request/response policy tips except where noted in ``smartcache.core.commands``), in a
compact one-line-per-command notation parsed once at first use::

    name arity flags keyspec... [req=<request_policy>] [resp=<response_policy>]

``flags`` keeps only the flags smartcache reads (``-`` for none). A key spec is
``[KEYWORD]@<start>`` followed by ``:<lastkey>[:<keystep>[:<limit>]]`` for a range (default
``:0:1:0``, one key) or ``#<keynumidx>+<firstkey>[*<keystep>]`` for a key count, then
``!flag`` for the flags that change extraction (``not_key``, ``incomplete``,
``variable_flags``); ``?`` is a spec of unknown type. Without a keyword, ``<start>`` is the
index of the first key; with one, the position to search from (negative: backwards from the
end). Subcommands are ``parent|sub``. Data only: never does I/O.
"""

from __future__ import annotations

import re

from smartcache.core._keyspec import KeySpec

__all__ = ["StaticEntry", "key_spec", "parse_static_table"]

#: (name, arity, flags, key specs, tips) of one command, tips spelled as the server spells them.
StaticEntry = tuple[str, int, frozenset[str], tuple[KeySpec, ...], frozenset[str]]

_SPEC = re.compile(
    r"(?:(?P<kw>[A-Z]+)?@(?P<start>-?\d+)"
    r"(?:(?P<range>(?::-?\d+){1,3})|#(?P<idx>\d+)\+(?P<first>\d+)(?:\*(?P<step>\d+))?)?"
    r"|(?P<unknown>\?))"
    r"(?P<flags>(?:![a-z_]+)*)"
)
_TIP_PREFIX = {"req": "request_policy", "resp": "response_policy"}


def key_spec(text: str) -> KeySpec:
    match = _SPEC.fullmatch(text)
    if match is None:
        raise ValueError(f"bad key spec {text!r} in the static command table")
    flags = frozenset(match["flags"].split("!")[1:])
    if match["unknown"]:
        return KeySpec(begin="unknown", index=0, find="unknown", flags=flags)
    start = int(match["start"])
    keyword = match["kw"] or ""
    if match["idx"] is not None:
        find, lastkey, limit = "keynum", 0, 0
        keynumidx, firstkey = int(match["idx"]), int(match["first"])
        keystep = int(match["step"] or 1)
    else:
        values = [int(v) for v in (match["range"] or "").split(":")[1:]]
        find, keynumidx, firstkey = "range", 0, 1
        lastkey, keystep, limit = [*values, *(0, 1, 0)[len(values) :]]
    return KeySpec(
        begin="keyword" if keyword else "index",
        index=0 if keyword else start,
        keyword=keyword,
        startfrom=start if keyword else 0,
        find=find,
        lastkey=lastkey,
        keystep=keystep,
        limit=limit,
        keynumidx=keynumidx,
        firstkey=firstkey,
        flags=flags,
    )


def parse_static_table() -> list[StaticEntry]:
    """Parse the built-in table into one entry per command and subcommand."""
    entries: list[StaticEntry] = []
    for line in _TABLE.splitlines():
        name, arity, flags, *rest = line.split()
        specs = tuple(key_spec(item) for item in rest if "=" not in item)
        tips = frozenset(
            f"{_TIP_PREFIX[kind]}:{value}"
            for kind, _, value in (item.partition("=") for item in rest if "=" in item)
        )
        flag_set = frozenset() if flags == "-" else frozenset(flags.split(","))
        entries.append((name, int(arity), flag_set, specs, tips))
    return entries


_TABLE = """\
acl -2 -
acl|cat -2 noscript
acl|deluser -3 admin,noscript req=all_nodes resp=all_succeeded
acl|dryrun -4 admin,noscript
acl|genpass -2 noscript
acl|getuser 3 admin,noscript
acl|help 2 -
acl|list 2 admin,noscript
acl|load 2 admin,noscript
acl|log -2 admin,noscript
acl|save 2 admin,noscript req=all_nodes resp=all_succeeded
acl|setuser -3 admin,noscript req=all_nodes resp=all_succeeded
acl|users 2 admin,noscript
acl|whoami 2 noscript
append 3 write,denyoom,fast @1
asking 1 fast
auth -2 noscript,fast
bgrewriteaof 1 admin,noscript
bgsave -1 admin,noscript
bitcount -2 readonly @1
bitfield -2 write,denyoom @1!variable_flags
bitfield_ro -2 readonly,fast @1
bitop -4 write,denyoom @2 @3:-1
bitpos -3 readonly @1
blmove 6 write,denyoom,blocking @1 @2
blmpop -5 write,blocking,movablekeys @2#0+1
blpop -3 write,blocking @1:-2
brpop -3 write,blocking @1:-2
brpoplpush 4 write,denyoom,blocking @1 @2
bzmpop -5 write,blocking,movablekeys @2#0+1
bzpopmax -3 write,blocking,fast @1:-2
bzpopmin -3 write,blocking,fast @1:-2
client -2 -
client|caching 3 noscript
client|capa -3 noscript
client|getname 2 noscript
client|getredir 2 noscript
client|help 2 -
client|id 2 noscript
client|import-source 3 noscript
client|info 2 noscript
client|kill -3 admin,noscript
client|list -2 admin,noscript
client|no-evict 3 admin,noscript
client|no-touch 3 noscript
client|pause -3 admin,noscript
client|reply 3 noscript
client|setinfo 4 noscript req=all_nodes resp=all_succeeded
client|setname 3 noscript req=all_nodes resp=all_succeeded
client|tracking -3 noscript
client|trackinginfo 2 noscript
client|unblock -3 admin,noscript
client|unpause 2 admin,noscript
cluster -2 -
cluster|addslots -3 admin
cluster|addslotsrange -4 admin
cluster|bumpepoch 2 admin
cluster|cancelslotmigrations 2 admin
cluster|count-failure-reports 3 admin
cluster|countkeysinslot 3 -
cluster|delslots -3 admin
cluster|delslotsrange -4 admin
cluster|failover -2 admin
cluster|flushslot -3 write,admin
cluster|flushslots 2 admin
cluster|forget 3 admin
cluster|getkeysinslot 4 -
cluster|getslotmigrations 2 admin
cluster|help 2 -
cluster|info 2 -
cluster|keyslot 3 -
cluster|links 2 -
cluster|meet -4 admin
cluster|migrateslots -4 admin
cluster|myid 2 -
cluster|myshardid 2 -
cluster|nodes 2 -
cluster|replicas 3 admin
cluster|replicate -3 admin
cluster|reset -2 admin,noscript
cluster|saveconfig 2 admin
cluster|set-config-epoch 3 admin
cluster|setslot -4 admin
cluster|shards 2 -
cluster|slaves 3 admin
cluster|slot-stats -4 - req=all_shards
cluster|slots 2 -
cluster|syncslots -3 admin
clusterscan -2 readonly @1!not_key req=special resp=special
command -1 -
command|count 2 -
command|docs -2 -
command|getkeys -3 -
command|getkeysandflags -3 -
command|help 2 -
command|info -2 -
command|list -2 -
commandlog -2 -
commandlog|get 4 admin req=all_nodes
commandlog|help 2 -
commandlog|len 3 admin req=all_nodes resp=agg_sum
commandlog|reset 3 admin req=all_nodes resp=all_succeeded
config -2 -
config|get -3 admin,noscript
config|help 2 -
config|resetstat 2 admin,noscript req=all_nodes resp=all_succeeded
config|rewrite 2 admin,noscript req=all_nodes resp=all_succeeded
config|set -4 admin,noscript req=all_nodes resp=all_succeeded
copy -3 write,denyoom @1 @2
dbsize 1 readonly,fast req=all_shards resp=agg_sum
decr 2 write,denyoom,fast @1
decrby 3 write,denyoom,fast @1
del -2 write @1:-1 req=multi_shard resp=agg_sum
delifeq 3 write,fast @1
discard 1 noscript,fast
dump 2 readonly @1
echo 2 fast
eval -3 noscript,movablekeys @2#0+1
eval_ro -3 readonly,noscript,movablekeys @2#0+1
evalsha -3 noscript,movablekeys @2#0+1
evalsha_ro -3 readonly,noscript,movablekeys @2#0+1
exec 1 noscript
exists -2 readonly,fast @1:-1 req=multi_shard resp=agg_sum
expire -3 write,fast @1
expireat -3 write,fast @1
expiretime 2 readonly,fast @1
failover -1 admin,noscript
fcall -3 noscript,movablekeys @2#0+1
fcall_ro -3 readonly,noscript,movablekeys @2#0+1
flushall -1 write req=all_shards resp=all_succeeded
flushdb -1 write req=all_shards resp=all_succeeded
function -2 -
function|delete 3 write,noscript req=all_shards resp=all_succeeded
function|dump 2 noscript
function|flush -2 write,noscript req=all_shards resp=all_succeeded
function|help 2 -
function|kill 2 noscript req=all_shards resp=one_succeeded
function|list -2 noscript
function|load -3 write,denyoom,noscript req=all_shards resp=all_succeeded
function|restore -3 write,denyoom,noscript req=all_shards resp=all_succeeded
function|stats 2 noscript req=all_shards resp=special
geoadd -5 write,denyoom @1
geodist -4 readonly @1
geohash -2 readonly @1
geopos -2 readonly @1
georadius -6 write,denyoom,movablekeys @1 STORE@6!variable_flags STOREDIST@6!variable_flags
georadius_ro -6 readonly @1
georadiusbymember -5 write,denyoom,movablekeys @1 STORE@5!variable_flags STOREDIST@5!variable_flags
georadiusbymember_ro -5 readonly @1
geosearch -7 readonly @1
geosearchstore -8 write,denyoom @1 @2
get 2 readonly,fast @1
getbit 3 readonly,fast @1
getdel 2 write,fast @1
getex -2 write,fast @1
getrange 4 readonly @1
getset 3 write,denyoom,fast @1
hdel -3 write,fast @1
hello -1 noscript,fast
hexists 3 readonly,fast @1
hexpire -6 write,fast @1
hexpireat -6 write,fast @1
hexpiretime -5 readonly,fast @1
hget 3 readonly,fast @1
hgetall 2 readonly @1
hgetdel -5 write,fast @1
hgetex -5 write,fast @1
hincrby 4 write,denyoom,fast @1
hincrbyfloat 4 write,denyoom,fast @1
hkeys 2 readonly @1
hlen 2 readonly,fast @1
hmget -3 readonly,fast @1
hmset -4 write,denyoom,fast @1
hpersist -5 write,fast @1
hpexpire -6 write,fast @1
hpexpireat -6 write,fast @1
hpexpiretime -5 readonly,fast @1
hpttl -5 readonly,fast @1
hrandfield -2 readonly @1
hscan -3 readonly @1
hset -4 write,denyoom,fast @1
hsetex -6 write,denyoom,fast @1
hsetnx 4 write,denyoom,fast @1
hstrlen 3 readonly,fast @1
httl -5 readonly,fast @1
hvals 2 readonly @1
incr 2 write,denyoom,fast @1
incrby 3 write,denyoom,fast @1
incrbyfloat 3 write,denyoom,fast @1
info -1 - req=all_shards resp=special
keys 2 readonly req=all_shards
lastsave 1 fast
latency -2 -
latency|doctor 2 admin,noscript req=all_nodes resp=special
latency|graph 3 admin,noscript req=all_nodes resp=special
latency|help 2 -
latency|histogram -2 admin,noscript req=all_nodes resp=special
latency|history 3 admin,noscript req=all_nodes resp=special
latency|latest 2 admin,noscript req=all_nodes resp=special
latency|reset -2 admin,noscript req=all_nodes resp=agg_sum
lcs -3 readonly @1:1
lindex 3 readonly @1
linsert 5 write,denyoom @1
llen 2 readonly,fast @1
lmove 5 write,denyoom @1 @2
lmpop -4 write,movablekeys @1#0+1
lpop -2 write,fast @1
lpos -3 readonly @1
lpush -3 write,denyoom,fast @1
lpushx -3 write,denyoom,fast @1
lrange 4 readonly @1
lrem 4 write @1
lset 4 write,denyoom @1
ltrim 4 write @1
memory -2 -
memory|doctor 2 - req=all_shards resp=special
memory|help 2 -
memory|malloc-stats 2 - req=all_shards resp=special
memory|purge 2 - req=all_shards resp=all_succeeded
memory|stats 2 - req=all_shards resp=special
memory|usage -3 readonly @2
mget -2 readonly,fast @1:-1 req=multi_shard
migrate -6 write,movablekeys @3 KEYS@-2:-1!incomplete
module -2 -
module|help 2 -
module|list 2 admin,noscript
module|load -3 admin,noscript
module|loadex -3 admin,noscript
module|unload 3 admin,noscript
monitor 1 admin,noscript
move 3 write,fast @1
mset -3 write,denyoom @1:-1:2 req=multi_shard resp=all_succeeded
msetex -4 write,denyoom,movablekeys @1#0+1*2 req=multi_shard resp=all_succeeded
msetnx -3 write,denyoom @1:-1:2
multi 1 noscript,fast
object -2 -
object|encoding 3 readonly @2
object|freq 3 readonly @2
object|help 2 -
object|idletime 3 readonly @2
object|refcount 3 readonly @2
persist 2 write,fast @1
pexpire -3 write,fast @1
pexpireat -3 write,fast @1
pexpiretime 2 readonly,fast @1
pfadd -2 write,denyoom,fast @1
pfcount -2 readonly @1:-1
pfmerge -2 write,denyoom @1 @2:-1
ping -1 fast req=all_shards resp=all_succeeded
psetex 4 write,denyoom @1
psubscribe -2 pubsub,noscript
pttl 2 readonly,fast @1
publish 3 pubsub,fast
pubsub -2 -
pubsub|channels -2 pubsub
pubsub|help 2 -
pubsub|numpat 2 pubsub
pubsub|numsub -2 pubsub
pubsub|shardchannels -2 pubsub
pubsub|shardnumsub -2 pubsub
punsubscribe -1 pubsub,noscript
quit -1 noscript,fast
randomkey 1 readonly req=all_shards resp=special
readonly 1 fast
readwrite 1 fast
rename 3 write @1 @2
renamenx 3 write,fast @1 @2
replicaof 3 admin,noscript
reset 1 noscript,fast
restore -4 write,denyoom @1
role 1 noscript,fast
rpop -2 write,fast @1
rpoplpush 3 write,denyoom @1 @2
rpush -3 write,denyoom,fast @1
rpushx -3 write,denyoom,fast @1
sadd -3 write,denyoom,fast @1
save 1 admin,noscript
scan -2 readonly req=special resp=special
scard 2 readonly,fast @1
script -2 -
script|debug -3 noscript
script|exists -3 noscript req=all_shards resp=agg_logical_and
script|flush -2 noscript req=all_nodes resp=all_succeeded
script|help 2 -
script|kill 2 noscript req=all_shards resp=one_succeeded
script|load 3 noscript req=all_nodes resp=all_succeeded
script|show 3 noscript
sdiff -2 readonly @1:-1
sdiffstore -3 write,denyoom @1 @2:-1
select 2 fast
set -3 write,denyoom @1!variable_flags
setbit 4 write,denyoom @1
setex 4 write,denyoom @1
setnx 3 write,denyoom,fast @1
setrange 4 write,denyoom @1
shutdown -1 admin,noscript
sinter -2 readonly @1:-1
sintercard -3 readonly,movablekeys @1#0+1
sinterstore -3 write,denyoom @1 @2:-1
sismember 3 readonly,fast @1
slaveof 3 admin,noscript
slowlog -2 -
slowlog|get -2 admin req=all_nodes
slowlog|help 2 -
slowlog|len 2 admin req=all_nodes resp=agg_sum
slowlog|reset 2 admin req=all_nodes resp=all_succeeded
smembers 2 readonly @1
smismember -3 readonly,fast @1
smove 4 write,fast @1 @2
sort -2 write,denyoom,movablekeys @1 ? ?
sort_ro -2 readonly,movablekeys @1 ?
spop -2 write,fast @1
spublish 3 pubsub,fast @1!not_key
srandmember -2 readonly @1
srem -3 write,fast @1
sscan -3 readonly @1
ssubscribe -2 pubsub,noscript @1:-1!not_key
strlen 2 readonly,fast @1
subscribe -2 pubsub,noscript
substr 4 readonly @1
sunion -2 readonly @1:-1
sunionstore -3 write,denyoom @1 @2:-1
sunsubscribe -1 pubsub,noscript @1:-1!not_key
swapdb 3 write,fast
time 1 fast
touch -2 readonly,fast @1:-1 req=multi_shard resp=agg_sum
ttl 2 readonly,fast @1
type 2 readonly,fast @1
unlink -2 write,fast @1:-1 req=multi_shard resp=agg_sum
unsubscribe -1 pubsub,noscript
unwatch 1 noscript,fast
wait 3 blocking req=all_shards resp=agg_min
waitaof 4 blocking req=all_shards resp=agg_min
watch -2 noscript,fast @1:-1
xack -4 write,fast @1
xadd -5 write,denyoom,fast @1
xautoclaim -6 write,fast @1
xclaim -6 write,fast @1
xdel -3 write,fast @1
xgroup -2 -
xgroup|create -5 write,denyoom @2
xgroup|createconsumer 5 write,denyoom @2
xgroup|delconsumer 5 write @2
xgroup|destroy 4 write @2
xgroup|help 2 -
xgroup|setid -5 write @2
xinfo -2 -
xinfo|consumers 4 readonly @2
xinfo|groups 3 readonly @2
xinfo|help 2 -
xinfo|stream -3 readonly @2
xlen 2 readonly,fast @1
xpending -3 readonly @1
xrange -4 readonly @1
xread -4 readonly,blocking,movablekeys STREAMS@1:-1:1:2
xreadgroup -7 write,blocking,movablekeys STREAMS@4:-1:1:2
xrevrange -4 readonly @1
xsetid -3 write,denyoom,fast @1
xtrim -4 write @1
zadd -4 write,denyoom,fast @1
zcard 2 readonly,fast @1
zcount 4 readonly,fast @1
zdiff -3 readonly,movablekeys @1#0+1
zdiffstore -4 write,denyoom,movablekeys @1 @2#0+1
zincrby 4 write,denyoom,fast @1
zinter -3 readonly,movablekeys @1#0+1
zintercard -3 readonly,movablekeys @1#0+1
zinterstore -4 write,denyoom,movablekeys @1 @2#0+1
zlexcount 4 readonly,fast @1
zmpop -4 write,movablekeys @1#0+1
zmscore -3 readonly,fast @1
zpopmax -2 write,fast @1
zpopmin -2 write,fast @1
zrandmember -2 readonly @1
zrange -4 readonly @1
zrangebylex -4 readonly @1
zrangebyscore -4 readonly @1
zrangestore -5 write,denyoom @1 @2
zrank -3 readonly,fast @1
zrem -3 write,fast @1
zremrangebylex 4 write @1
zremrangebyrank 4 write @1
zremrangebyscore 4 write @1
zrevrange -4 readonly @1
zrevrangebylex -4 readonly @1
zrevrangebyscore -4 readonly @1
zrevrank -3 readonly,fast @1
zscan -3 readonly @1
zscore 3 readonly,fast @1
zunion -3 readonly,movablekeys @1#0+1
zunionstore -4 write,denyoom,movablekeys @1 @2#0+1
"""
