"""WSGI entry point of the local PanDA test stack (a test fixture, not product code).

``gunicorn loopback_wsgi:application`` serves the real PanDA server application
(``pandaserver.server.panda.application``, panda-server 1.0.4) with two additions that a
production deployment gets from Apache and that a loopback test stack must supply itself:

1. **Identity.** In production, Apache + mod_gridsite check the client's certificate and
   put its DN and VOMS attributes into the WSGI environ (``SSL_CLIENT_S_DN``,
   ``GRST_CRED_*``); the server authorises on those. Here every request comes from
   127.0.0.1 (the server binds to loopback only) and is given the DN in
   ``PANDA_STACK_DN`` with a ``/wlcg/Role=production`` attribute: the test user is also
   the production role that JEDI's internal calls and the pilot need.

2. **The legacy pilot API.** panda-pilot 3.7.0.36 (the newest on PyPI) still calls
   ``/server/panda/getJob`` and ``updateJob``. panda-server 1.0.4 removed
   those methods from its legacy list (``pandaserver/srvcore/allowed_methods.py``) and
   answers ``403 method getJob is forbidden``; no configuration brings them back. Their
   replacements are ``/api/v1/pilot/acquire_jobs`` and ``update_job``, whose replies carry the same legacy job dictionary
   (``Protocol.Response``). So this bridge renames the form fields, calls the new method
   through the same application (same validation, same database code) and hands the
   pilot the legacy reply. Newer pilot3 releases (on GitHub, not on PyPI) call the new
   API themselves; with one of those the bridge is unused.

Apache + mod_wsgi also maps the URL onto ``SCRIPT_NAME`` (``WSGIScriptAlias``), which the
server parses; gunicorn leaves it empty, so the path is moved there. And Apache serves the
sandbox cache (``/cache/``), which this module does too.
"""

from __future__ import annotations

import inspect
import io
import json
import os
import typing
from urllib.parse import parse_qsl

from pandaserver.api.v1 import pilot_api
from pandaserver.server.panda import application as panda_application

DN = os.environ.get("PANDA_STACK_DN", "/DC=local/O=smartbkg/CN=Local Tester")
ROLE = os.environ.get("PANDA_STACK_ROLE", "/wlcg/Role=production")

# Legacy form field -> new API argument (pilot/control/job.py get_dispatcher_dictionary
# and get_data_structure in panda-pilot 3.7; pandaserver/api/v1/pilot_api.py).
GET_JOB = {
    "siteName": "site_name",
    "timeout": "timeout",
    "mem": "memory",
    "diskSpace": "disk_space",
    "prodSourceLabel": "prod_source_label",
    "node": "node",
    "computingElement": "computing_element",
    "prodUserID": "prod_user_id",
    "getProxyKey": "get_proxy_key",
    "taskID": "task_id",
    "nJobs": "n_jobs",
    "background": "background",
    "resourceType": "resource_type",
    "harvester_id": "harvester_id",
    "worker_id": "worker_id",
    "schedulerID": "scheduler_id",
    "jobType": "job_type",
    "viaTopic": "via_topic",
    "remaining_time": "remaining_time",
}
UPDATE_JOB = {
    "jobId": "job_id",
    "state": "job_status",
    "xml": "job_output_report",
    "node": "node",
    "cpuConsumptionTime": "cpu_consumption_time",
    "cpuConsumptionUnit": "cpu_consumption_unit",
    "schedulerID": "scheduler_id",
    "pilotID": "pilot_id",
    "siteName": "site_name",
    "pilotLog": "pilot_log",
    "metaData": "meta_data",
    "cpuConversionFactor": "cpu_conversion_factor",
    "transExitCode": "trans_exit_code",
    "pilotErrorCode": "pilot_error_code",
    "pilotErrorDiag": "pilot_error_diag",
    "exeErrorCode": "exe_error_code",
    "exeErrorDiag": "exe_error_diag",
    "pilotTiming": "pilot_timing",
    "startTime": "start_time",
    "endTime": "end_time",
    "nEvents": "n_events",
    "nInputFiles": "n_input_files",
    "batchID": "batch_id",
    "attemptNr": "attempt_nr",
    "jobMetrics": "job_metrics",
    "stdout": "stdout",
    "jobSubStatus": "job_sub_status",
    "coreCount": "core_count",
    "maxRSS": "max_rss",
    "maxVMEM": "max_vmem",
    "maxSWAP": "max_swap",
    "maxPSS": "max_pss",
    "avgRSS": "avg_rss",
    "avgVMEM": "avg_vmem",
    "avgSWAP": "avg_swap",
    "avgPSS": "avg_pss",
    "totRCHAR": "tot_rchar",
    "totWCHAR": "tot_wchar",
    "totRBYTES": "tot_rbytes",
    "totWBYTES": "tot_wbytes",
    "rateRCHAR": "rate_rchar",
    "rateWCHAR": "rate_wchar",
    "rateRBYTES": "rate_rbytes",
    "rateWBYTES": "rate_wbytes",
    "corruptedFiles": "corrupted_files",
    "meanCoreCount": "mean_core_count",
    "cpu_architecture_level": "cpu_architecture_level",
}
# legacy method -> (new path, field map, POST or GET)
BRIDGE = {
    "getJob": ("/api/v1/pilot/acquire_jobs", GET_JOB, "POST"),
    "updateJob": ("/api/v1/pilot/update_job", UPDATE_JOB, "POST"),
}
SC_FAILED, SC_NO_JOBS = 30, 20


def _value(annotation, raw: str):
    """A form value as the type the new API declares (a JSON body is type-checked, and
    panda-server 1.0.4 fails with 500 on a wrong type for an ``int | float`` argument)."""
    kinds = set(typing.get_args(annotation)) or {annotation}
    try:
        if kinds <= {int, float, type(None)} and kinds & {int, float}:
            number = float(raw)
            return (
                int(number)
                if int in kinds and (number.is_integer() or float not in kinds)
                else number
            )
        if bool in kinds:
            return raw.lower() in {"true", "1", "yes"}
    except ValueError:
        return None
    return raw


def _translate(form: dict[str, str], fields: dict[str, str], method) -> dict:
    parameters = inspect.signature(method).parameters
    out = {}
    for key, raw in form.items():
        name = fields.get(key)
        if name is None or name not in parameters or raw in ("", "None", "NULL"):
            continue
        value = _value(parameters[name].annotation, raw)
        if value is not None:
            out[name] = value
    return out


def _legacy_reply(method: str, reply: dict) -> dict:
    data = reply.get("data")
    if method == "getJob":
        if reply.get("success") and isinstance(data, dict) and data.get("jobs"):
            return data["jobs"][0]
        return {"StatusCode": SC_NO_JOBS, "errorDialog": reply.get("message", "")}
    if isinstance(data, dict) and "StatusCode" in data:
        return data
    return {"StatusCode": SC_FAILED, "ErrorDiag": reply.get("message", "")}


def _call(environ: dict, path: str, method: str, body: bytes | None, content_type: str):
    inner = dict(environ)
    inner["SCRIPT_NAME"], inner["PATH_INFO"] = path, ""
    inner["REQUEST_METHOD"] = method
    inner["HTTP_ACCEPT"] = "application/json"
    if body is not None:
        inner["CONTENT_TYPE"] = content_type
        inner["CONTENT_LENGTH"] = str(len(body))
        inner["wsgi.input"] = io.BytesIO(body)
    captured = {}

    def start_response(status, headers, exc_info=None):
        captured["status"] = status
        return lambda _data: None

    chunks = panda_application(inner, start_response)
    return captured.get("status", "500"), b"".join(chunks)


def _bridge(environ: dict, start_response, legacy: str):
    path, fields, method = BRIDGE[legacy]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(length) if length else b""
    form = dict(parse_qsl(raw.decode(), keep_blank_values=True))
    form.update(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
    arguments = _translate(form, fields, getattr(pilot_api, path.rsplit("/", 1)[-1]))
    status, body = _call(environ, path, method, json.dumps(arguments).encode(), "application/json")
    try:
        reply = json.loads(body)
    except ValueError:
        reply = {"success": False, "message": f"{status}: {body[:300]!r}"}
    payload = json.dumps(_legacy_reply(legacy, reply)).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
    )
    return [payload]


def _cache_file(start_response, name: str):
    """What Apache's ``Alias /cache/`` serves in production: the sandbox files users
    uploaded, which runGen downloads from ``--sourceURL``."""
    from pandaserver.config import panda_config

    path = os.path.join(panda_config.cache_dir, os.path.basename(name))
    if not name or not os.path.isfile(path):
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    with open(path, "rb") as handle:
        data = handle.read()
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(data)))],
    )
    return [data]


def application(environ, start_response):
    environ["SSL_CLIENT_S_DN"] = DN
    environ["GRST_CRED_0"] = f"VOMS {ROLE}"
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    environ["SCRIPT_NAME"], environ["PATH_INFO"] = path, ""
    if path.startswith("/cache/"):
        return _cache_file(start_response, path.removeprefix("/cache/"))
    fields = path.split("/")
    if path.startswith("/server/panda/") and len(fields) == 4 and fields[-1] in BRIDGE:
        return _bridge(environ, start_response, fields[-1])
    return panda_application(environ, start_response)
