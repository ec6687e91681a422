"""Fault injection and inspection of a running Clover cluster, as a separate process.

The fault tests run the system the way users do (`gpu-node setup`, `controller run` as processes,
Ray with token auth in its own HOME); this tool joins that cluster with the same environment and
does one thing per call, printing JSON:

  python -m tests.cluster_tool ADDRESS actors                 every Clover actor: name, id, pid
  python -m tests.cluster_tool ADDRESS kill ACTOR [--restart] kill one actor (Serve replaces its replicas)
  python -m tests.cluster_tool ADDRESS start-agent NODE GPUS STATE_DIR   re-create a node agent
  python -m tests.cluster_tool ADDRESS bus                     routing-table version and ingress reports
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from configs.cluster import NAMESPACE, ray_env


def _actors() -> list[dict[str, object]]:
    import ray

    out = []
    for a in ray.util.list_named_actors(all_namespaces=True):
        name, ns = a["name"], a["namespace"]
        if not (ns == NAMESPACE or "clover#ingress" in name or "#slice#" in name):
            continue
        try:
            h = ray.get_actor(name, namespace=ns)
        except ValueError:
            continue
        kind = ("ingress" if "clover#ingress" in name else "slice" if "#slice#" in name else
                "agent" if name.startswith("clover-agent-") else name)
        out.append({"name": name, "namespace": ns, "kind": kind, "actor_id": h._actor_id.hex()})
    return out


def main(argv: list[str]) -> int:
    ray_env()
    import ray

    p = argparse.ArgumentParser(prog="cluster_tool")
    p.add_argument("address")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("actors")
    k = sub.add_parser("kill")
    k.add_argument("name")
    k.add_argument("--namespace", default=NAMESPACE)
    k.add_argument("--restart", action="store_true", help="let Ray restart the actor (a crashed process)")
    s = sub.add_parser("start-agent")
    s.add_argument("node")
    s.add_argument("gpus", type=int)
    s.add_argument("state_dir")
    sub.add_parser("bus")
    args = p.parse_args(argv)
    ray.init(address=args.address, namespace=NAMESPACE, log_to_driver=False)
    try:
        if args.cmd == "actors":
            print(json.dumps(_actors()))
        elif args.cmd == "kill":
            ray.kill(ray.get_actor(args.name, namespace=args.namespace), no_restart=not args.restart)
            print(json.dumps({"killed": args.name, "at": time.time()}))
        elif args.cmd == "start-agent":
            from gpu_node.agent import AgentConfig
            from gpu_node.setup_cmd import bring_up_agent

            info = bring_up_agent(AgentConfig(args.node, gpus=args.gpus, state_dir=args.state_dir))
            print(json.dumps({"node": info.node, "started_at": info.started_at}))
        elif args.cmd == "bus":
            from controller.serving.control_bus import BusClient, bus_handle

            bus = BusClient(bus_handle())
            table = bus.table()
            now = time.time()
            print(json.dumps({"version": table.version if table else None,
                              "routes": [[e.name, e.share, e.draining] for e in (table.entries if table else ())],
                              "ingress": [{"id": r.ingress_id, "version": r.table_version, "age_s": now - r.seen_at,
                                           "inflight": sum(r.counters.inflight.values())} for r in bus.reports()]}))
        return 0
    finally:
        ray.shutdown()


if __name__ == "__main__":
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    sys.exit(main(sys.argv[1:]))
