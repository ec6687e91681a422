"""`controller stop --address HOST:PORT`: stop a controller started with `controller run --detach`.

It finishes the last accounting interval and writes the end event to run.log. Serving goes on
(the replicas, the ingress and its routing table stay) unless `--and-serving` is given.
"""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", required=True, help="Ray cluster address HOST:PORT")
    parser.add_argument("--and-serving", action="store_true",
                        help="also delete the slice replicas, the ingress and the control bus")


def run(args: argparse.Namespace) -> int:
    import ray

    from controller.loop.detached import find_detached
    from controller.serving.runtime import init_ray, stop_serving

    try:
        init_ray(args.address)
    except (ConnectionError, ValueError) as exc:
        print(f"controller stop: {exc}", file=sys.stderr)
        return 2
    try:
        actor = find_detached()
        if actor is None:
            print("controller stop: no detached controller runs in this cluster (nothing to stop)", file=sys.stderr)
        else:
            summary = ray.get(actor.stop.remote(), timeout=300)
            ray.kill(actor, no_restart=True)
            print(f"controller stopped: {summary}")
        if args.and_serving:
            from ray import serve

            serve.start()  # connect to the running Serve instance
            stop_serving()
            print("replicas, ingress and control bus deleted")
        return 0 if actor is not None or args.and_serving else 1
    finally:
        ray.shutdown()
