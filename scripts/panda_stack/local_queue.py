"""The local queue of the PanDA test stack (a test fixture, not product code).

    python local_queue.py QUEUE STORAGE_DIR SERVER_URL > queue.sql   # rows for the server's DB
    python local_queue.py --pilot QUEUE STORAGE_DIR SERVER_URL OUT   # the pilot's queue files

On a real grid CRIC holds what a queue is: its PanDA queue record (``schedconfig``), its
site, and the storage endpoints (RSEs) it reads from and writes to; the server's
configurator copies them into ``schedconfig_json``, ``site``, ``panda_site``,
``ddm_endpoint`` and ``panda_ddm_relation``, and pilots download the same records as JSON.
Here one queue, ``QUEUE``, runs jobs on this machine as bare processes (no container
runtime) and writes outputs to one endpoint, ``QUEUE_DISK``: the directory STORAGE_DIR,
reached with the pilot's ``mv`` copytool (a POSIX path, as a site's shared file system
or a mounted storage element would be). At a real site the endpoint is an RSE with its
own protocol (e.g. davs://, root://) and the pilot's rucio or gfal copytool.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

VO = "wlcg"


def endpoint(queue: str) -> str:
    return f"{queue}_DISK"


def queue_record(queue: str, server: str) -> dict:
    """The CRIC-style record of the queue (fields as SiteMapper and pilot 3 read them)."""
    return {
        "name": queue,
        "nickname": queue,
        "panda_resource": queue,
        "siteid": queue,
        "site": queue,
        "atlas_site": queue,
        "vo_name": VO,
        "cloud": "LOCAL",
        "country": "local",
        "type": "unified",
        "status": "online",
        "state": "ACTIVE",
        "tier": "T2",
        "tier_level": 2,
        "corecount": 1,
        "corepower": 10,
        "maxrss": 64000,
        "maxtime": 86400,
        "maxwdir": 100000,
        "maxinputsize": 50000,
        "memory": 64000,
        "pledgedcpu": 0,
        "transferringlimit": 0,
        "jobseed": "std",
        "capability": "ucore",
        "workflow": "pull_ups",
        # brokerage skips a queue without running pilots unless allow_no_pilot is set;
        # pilot 3's mv copytool moves outputs to the endpoint (not only next to the pilot,
        # for Harvester to ship) with mv_final_destination (pilot/api/data.py)
        "catchall": "allow_no_pilot,mv_final_destination",
        "direct_access_lan": False,
        "direct_access_wan": False,
        "is_cvmfs": False,
        "releases": ["ANY"],
        "validatedreleases": "True",
        "ddm": endpoint(queue),
        "objectstores": [],
        "pilot_manager": "local",
        "harvester": "",
        "container_type": "",
        "container_options": "",
        "environ": "",
        "maxdiskio": 0,
        "use_pcache": False,
        "timefloor": 0,
        "pandaserver": server,
        # stage-out: the mv copytool to the local endpoint (pilot 3's acopytools)
        "copytools": {"mv": {"setup": ""}},
        "acopytools": {"pr": ["mv"], "pw": ["mv"], "pl": ["mv"]},
        "astorages": {"pr": [endpoint(queue)], "pw": [endpoint(queue)], "pl": [endpoint(queue)]},
        "acopytools_schemas": {},
        "aprotocols": {},
        "params": {},
        "resource_type": "SCORE",
    }


def storage_record(queue: str, storage: Path) -> dict:
    """The CRIC-style record of the endpoint (what the pilot's stage-out reads). The mv
    copytool strips ``file://localhost`` from the transfer URL (copytool/mv.py
    build_final_path); with a bare ``file://`` it writes into the pilot's directory."""
    name = endpoint(queue)
    return {
        name: {
            "name": name,
            "site": queue,
            "type": "DATADISK",
            "token": "",
            "is_deterministic": True,
            "state": "ACTIVE",
            "resource": {"bucket_id": None},
            "arprotocols": {
                "read_lan": [
                    {"endpoint": "file://localhost", "path": str(storage), "flavour": "POSIX"}
                ],
                "write_lan": [
                    {"endpoint": "file://localhost", "path": str(storage), "flavour": "POSIX"}
                ],
            },
            "rprotocols": {
                "0": {
                    "endpoint": "file://localhost",
                    "path": str(storage),
                    "flavour": "POSIX",
                    "activities": [["r", 1], ["w", 1], ["d", 1]],
                    "settings": {},
                }
            },
            "aprotocols": {
                "r": [["file://localhost", 1, str(storage)]],
                "w": [["file://localhost", 1, str(storage)]],
                "d": [["file://localhost", 1, str(storage)]],
            },
            "rc_site": queue,
            "vo_name": VO,
            "blacklisted": False,
        }
    }


def sql(queue: str, storage: Path, server: str) -> str:
    record = json.dumps(queue_record(queue, server)).replace("'", "''")
    name = endpoint(queue)
    return f"""
INSERT INTO doma_panda.site (site_name, role, tier_level, state)
    VALUES ('{queue}', '', 2, 'ACTIVE') ON CONFLICT (site_name) DO NOTHING;
INSERT INTO doma_panda.ddm_endpoint (ddm_endpoint_name, site_name, ddm_spacetoken_name,
    space_total, space_free, space_used, is_tape, type, blacklisted, blacklisted_read,
    blacklisted_write, space_timestamp, detailed_status)
    VALUES ('{name}', '{queue}', '{name}', 1000, 1000, 0, 'N', 'DATADISK', 'N', 'N', 'N',
    now(), '{{}}') ON CONFLICT (ddm_endpoint_name) DO NOTHING;
INSERT INTO doma_panda.panda_site (panda_site_name, site_name, storage_site_name,
    default_ddm_endpoint, is_local)
    VALUES ('{queue}', '{queue}', '{queue}', '{name}', 'Y')
    ON CONFLICT (panda_site_name) DO NOTHING;
INSERT INTO doma_panda.panda_ddm_relation (panda_site_name, ddm_endpoint_name, is_local,
    roles, order_read, order_write, default_read, default_write, scope)
    VALUES ('{queue}', '{name}', 'Y', 'read_lan,write_lan', 1, 1, 'Y', 'Y', 'default')
    ON CONFLICT DO NOTHING;
INSERT INTO doma_panda.schedconfig_json (panda_queue, data, last_update)
    VALUES ('{queue}', '{record}', now())
    ON CONFLICT (panda_queue) DO UPDATE SET data = EXCLUDED.data, last_update = now();
"""


def main(argv: list[str]) -> None:
    if argv and argv[0] == "--pilot":
        queue, storage, server, out = argv[1], Path(argv[2]), argv[3], Path(argv[4])
        out.mkdir(parents=True, exist_ok=True)
        (out / "queuedata.json").write_text(json.dumps({queue: queue_record(queue, server)}))
        (out / "storages.json").write_text(json.dumps(storage_record(queue, storage)))
        return
    queue, storage, server = argv[0], Path(argv[1]), argv[2]
    sys.stdout.write(sql(queue, storage, server))


if __name__ == "__main__":
    main(sys.argv[1:])
