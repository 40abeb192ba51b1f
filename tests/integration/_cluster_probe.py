"""Ask a token-protected Ray cluster about a job; prints one JSON object.

Run in its own process (``python _cluster_probe.py CMD DASHBOARD_URL SUBMISSION_ID [TIMEOUT_S]``)
so that the test process never imports Ray or switches its auth mode. The
token comes from the environment (RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH /
~/.ray/auth_token); ``raypipe.runtime.submit.client`` turns on RAY_AUTH_MODE=token.

Commands:
  job        the job's info (status, Ray job id, driver exit code)
  placement  alive nodes, and the node ids of the job's tasks and actors, by name
  wait       wait until the job is final (at most TIMEOUT_S), then its info and logs
"""

from __future__ import annotations

import json
import sys
import time


def _info(c, sid: str) -> dict:
    i = c.get_job_info(sid)
    return {
        "status": str(getattr(i.status, "value", i.status)),
        "job_id": i.job_id,
        "driver_exit_code": i.driver_exit_code,
        "message": i.message,
        "driver_node_id": i.driver_node_id,
    }


def main() -> None:
    cmd, address, sid = sys.argv[1:4]
    from raypipe.runtime.submit import client

    c = client(address)
    out: dict = {}
    if cmd == "job":
        out = _info(c, sid)
    elif cmd == "wait":
        deadline = time.monotonic() + float(sys.argv[4])
        while True:
            out = _info(c, sid)
            if out["status"] in ("SUCCEEDED", "FAILED", "STOPPED") or time.monotonic() > deadline:
                break
            time.sleep(2)
        out["logs"] = c.get_job_logs(sid)
    elif cmd == "placement":
        from ray.util.state import list_actors, list_nodes, list_tasks

        job_id = _info(c, sid)["job_id"]
        nodes = list_nodes(address=address, limit=1000)
        tasks = list_tasks(address=address, filters=[("job_id", "=", job_id)], limit=10_000, timeout=60)
        actors = list_actors(address=address, filters=[("job_id", "=", job_id)], limit=10_000, timeout=60)
        out = {
            "job_id": job_id,
            "alive_nodes": sorted(n.node_id for n in nodes if n.state == "ALIVE"),
            "head_node": next((n.node_id for n in nodes if n.is_head_node), None),
            "tasks": [{"name": t.name, "node_id": t.node_id, "state": t.state} for t in tasks],
            "actors": [{"class_name": a.class_name, "node_id": a.node_id, "state": a.state} for a in actors],
        }
    else:
        raise SystemExit(f"unknown command {cmd}")
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
