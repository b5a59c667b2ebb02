"""Write the configuration of the local PanDA test stack (test fixture, not product code).

    python configure.py DIR VENV PORT PG_PORT QUEUE   # DIR/etc/panda/panda_{server,jedi,common}.cfg
    python configure.py --token                       # a JWT-shaped token for panda-client

The server, JEDI and pandacommon read their configs from ``$PANDA_HOME/etc/panda``
(``LiveConfigParser``); the start script sets ``PANDA_HOME=DIR``. Values differ from the
package's templates where a single loopback machine needs it: PostgreSQL on 127.0.0.1,
no token authentication (identity comes from ``loopback_wsgi.py``), the dummy DDM plugins
(no Rucio), one process per JEDI agent with short cycles (2 cores shared), and only the
server daemons a job needs to finish (the Adder) with short periods.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path


def token() -> str:
    """panda-client with PANDA_AUTH=oidc only decodes its token; the stack does not check it."""

    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    claims = {
        "sub": "smartbkg-local",
        "name": "Local Tester",
        "preferred_username": "localtester",
        "exp": 9999999999,
    }
    return f"{part({'alg': 'none'})}.{part(claims)}.local"


def server_cfg(directory: Path, venv: Path, port: int, pg_port: int, queue: str) -> str:
    site = next((venv / "lib").glob("python3*/site-packages"))
    # The daemon master kills a daemon that runs longer than a few periods; add_main loops
    # over job reports for a while each time (checking every few seconds), so its period
    # must not be short (5 s got it killed mid-update, leaving jobs in holding).
    daemons = {
        "add_main": {"enable": True, "period": 60, "loop": True},
        "add_sub": {"enable": True, "period": 60},
        "copyArchive": {"enable": True, "period": 300, "sync": True},
    }
    return f"""[server]
logdir = {directory}/log
loggername = prod
cache_dir = {directory}/cache
native_python = {venv}/bin
native_python32 = {venv}/bin
pandaCommon_dir = {site}/pandacommon
pandaPython_dir = {site}/pandaserver
home_dir_cwd = {directory}
backend = postgres
dbhost = 127.0.0.1
dbport = {pg_port}
dbuser = panda
dbpasswd = panda
dbname = panda_db
nDBConnection = 1
usedbtimeout = True
dbtimeout = 300
schemaPANDA = DOMA_PANDA
schemaMETA = DOMA_PANDAMETA
schemaPANDAARCH = DOMA_PANDAARCH
schemaJEDI = DOMA_PANDA
schemaDEFT = DOMA_DEFT
pserverhost = 127.0.0.1
pserverhosthttp = 127.0.0.1
pserverport = {port}
pserverporthttp = {port}
pserverportcache = {port}
pserveralias = 127.0.0.1
entryVerbose = False
record_statuschange = True
useJEDI = True
adder_plugins = wlcg:pandaserver.dataservice.adder_dummy_plugin:AdderDummyPlugin
setupper_plugins = wlcg:pandaserver.dataservice.setupper_dummy_plugin:SetupperDummyPlugin
token_authType = None
def_sitename = {queue}
def_queue = {queue}
def_nickname = {queue}
def_ddm = LOCAL_DISK
def_type = analysis
def_status = online
certdir = {directory}
[daemon]
enable = True
uname = root
gname = root
package = pandaserver.daemons.scripts
n_proc = 1
n_dbconn = 1
proc_lifetime = 14400
config = {json.dumps(daemons)}
"""


def jedi_cfg(directory: Path, pg_port: int) -> str:
    return f"""[master]
uname = root
gname = root
loggername = jedi
[db]
backend = postgres
dbhost = 127.0.0.1
dbport = {pg_port}
dbuser = panda
dbpasswd = panda
dbname = panda_db
nWorkers = 1
schemaJEDI = DOMA_PANDA
schemaDEFT = DOMA_DEFT
schemaPANDA = DOMA_PANDA
schemaPANDAARCH = DOMA_PANDAARCH
schemaMETA = DOMA_PANDAMETA
[ddm]
modConfig = wlcg:1:pandajedi.jediddm.GenDDMClient:GenDDMClient
voWithScope = atlas
user_scope_in_lowercase = True
[confeeder]
procConfig = wlcg:any:1
nWorkers = 1
loopCycle = 2
checkInterval = 1
[taskrefine]
modConfig = wlcg:any:pandajedi.jedirefine.GenTaskRefiner:GenTaskRefiner
procConfig = ::1
nWorkers = 1
loopCycle = 2
[jobbroker]
modConfig = wlcg:any:pandajedi.jedibrokerage.GenJobBroker:GenJobBroker
[jobthrottle]
modConfig = wlcg:any:pandajedi.jedithrottle.GenJobThrottler:GenJobThrottler
[jobgen]
procConfig = wlcg:any:1:
nTasks = 50
nFiles = 5000
nWorkers = 1
loopCycle = 2
lockInterval = 1
[postprocessor]
modConfig = wlcg:any:pandajedi.jedipprocess.GenPostProcessor:GenPostProcessor
procConfig = ::1
nWorkers = 1
nTasks = 50
loopCycle = 5
[watchdog]
modConfig = wlcg:any:pandajedi.jedidog.GenWatchDog:GenWatchDog
procConfig = wlcg:any:1
loopCycle = 60
waitForPicked = 30
waitForPending = 60
timeoutForPending = 7
waitForLocked = 60
waitForThrottled = 120
waitForExhausted = 48
waitForAchieved = 60
[taskbroker]
modConfig = atlas:managed|test:pandajedi.jedibrokerage.AtlasProdTaskBroker:AtlasProdTaskBroker
procConfig = wlcg:managed:0
nWorkers = 1
loopCycle = 600
[tcommando]
procConfig = ::1
nWorkers = 1
loopCycle = 2
[taskgen]
[tasksetup]
modConfig = wlcg:any:pandajedi.jedisetup.GenTaskSetupper:GenTaskSetupper
[msgprocessor]
[mq]
"""


def common_cfg(directory: Path) -> str:
    # the HTTP log emitter is configured (PandaLogger reads every key) but never used
    return f"""[logger]
loghost = 127.0.0.1
monport-apache = 80
method = GET
encoding = url
loghost_new = 127.0.0.1
monport-apache_new = 80
method_new = POST
encoding_new = json
monurlprefix = /logger/logger/query
logdir = {directory}/log
nemitters = 1
migrated = True
log_level = DEBUG
rotating_policy = none
rotating_backup_count = 1
rotating_max_size = 1024
rotating_interval = 24
"""


def main(argv: list[str]) -> None:
    if argv == ["--token"]:
        print(token())
        return
    directory, venv = Path(argv[0]), Path(argv[1])
    port, pg_port, queue = int(argv[2]), int(argv[3]), argv[4]
    etc = directory / "etc" / "panda"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "panda_server.cfg").write_text(server_cfg(directory, venv, port, pg_port, queue))
    (etc / "panda_jedi.cfg").write_text(jedi_cfg(directory, pg_port))
    (etc / "panda_common.cfg").write_text(common_cfg(directory))


if __name__ == "__main__":
    main(sys.argv[1:])
