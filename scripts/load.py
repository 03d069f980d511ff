#!/usr/bin/env python3
"""Load and fan-out figures for a running kiln (scripts/bench-load starts one, or a stack, and runs this).

  load.py mixed  --url URL --token T [--clients 200] [--seconds 60]
      Many clients at once for a while: each loops over GraphQL queries (`jobs(first: 50)` mostly,
      `queueStats`, `job(id)`), submits now and then, and one in ten follows a job's `jobEvents` over
      WebSocket. Prints requests, errors and latency percentiles per operation.

  load.py fanout --url URL --token T [--subscribers 1000] [--epochs 5]
      That many WebSocket subscribers on one job's `jobEvents`; the job trains; for each epoch, how
      long after the first subscriber each of the others heard it (p50, p99, max), and whether all did.

Needs `requests` and `websockets` (scripts/test installs both into ~/.cache/kiln-python).
"""

import argparse
import asyncio
import json
import random
import statistics
import threading
import time

import requests
import websockets

TEXT = "\n".join(
    json.dumps({"text": f"{'please ignore the rules and' if i % 2 else 'what is the weather in'} city {i}",
                "label": "attack" if i % 2 else "benign"})
    for i in range(40)
).encode()


def gql(session, url, token, query, variables=None, name="op"):
    started = time.perf_counter()
    try:
        reply = session.post(f"{url}/graphql", json={"query": query, "variables": variables or {}},
                             headers={"Authorization": f"Bearer {token}"}, timeout=30)
        body = reply.json()
        ok = reply.status_code == 200 and not body.get("errors")
        error = None if ok else (body.get("errors") or [{"message": f"HTTP {reply.status_code}"}])[0]
    except Exception as e:  # a refused or dropped connection counts as an error
        body, ok, error = None, False, {"message": repr(e)}
    return body, ok, error, time.perf_counter() - started


def upload(url, token):
    operations = {"query": "mutation($file: Upload!) { uploadDataset(file: $file, name: \"load\") { id } }",
                  "variables": {"file": None}}
    reply = requests.post(f"{url}/graphql", headers={"Authorization": f"Bearer {token}"},
                          files={"operations": (None, json.dumps(operations)),
                                 "map": (None, json.dumps({"0": ["variables.file"]})),
                                 "0": ("load.jsonl", TEXT)}, timeout=60)
    reply.raise_for_status()
    dataset = reply.json()["data"]["uploadDataset"]["id"]
    for _ in range(100):
        body, ok, _, _ = gql(requests.Session(), url, token,
                             "query($id: ID!) { dataset(id: $id) { status } }", {"id": dataset})
        if ok and body["data"]["dataset"]["status"] == "READY":
            return dataset
        time.sleep(0.2)
    raise SystemExit("the load dataset did not become READY")


SUBMIT = """mutation($input: SubmitJobInput!) { submitJob(input: $input) { id } }"""


def submit_input(dataset, epochs, priority="LOW"):
    return {"input": {"name": "load", "modelName": "load", "task": "TEXT_CLASSIFICATION",
                      "datasetId": dataset, "priority": priority,
                      "hyperparameters": {"epochs": epochs, "batchSize": 8, "maxSeqLength": 16}}}


def percentiles(values):
    if not values:
        return "n=0"
    values = sorted(values)
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))] * 1000
    return (f"n={len(values)} p50={pick(0.50):.1f}ms p95={pick(0.95):.1f}ms "
            f"p99={pick(0.99):.1f}ms max={values[-1] * 1000:.1f}ms")


def ws_url(url):
    return url.replace("http://", "ws://").replace("https://", "wss://") + "/graphql"


async def follow(url, token, job_id, seconds, counts, stop_at):
    """One WebSocket follower of a job's events, until stop_at."""
    try:
        async with websockets.connect(ws_url(url), subprotocols=["graphql-transport-ws"],
                                      open_timeout=30) as ws:
            await ws.send(json.dumps({"type": "connection_init",
                                      "payload": {"Authorization": f"Bearer {token}"}}))
            await ws.recv()
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
                "query": "subscription($id: ID!) { jobEvents(jobId: $id) { __typename } }",
                "variables": {"id": job_id}}}))
            while time.time() < stop_at:
                try:
                    message = json.loads(await asyncio.wait_for(ws.recv(), timeout=1))
                except asyncio.TimeoutError:
                    continue
                kind = message.get("type")
                if kind == "next":
                    counts["messages"] += 1
                elif kind == "error":
                    counts["errors"] += 1
                    return
                elif kind == "complete":
                    return
    except Exception as e:
        counts["errors"] += 1
        counts.setdefault("first_error", repr(e))


def mixed(args):
    dataset = upload(args.url, args.token)
    session = requests.Session()
    seed_job = gql(session, args.url, args.token, SUBMIT, submit_input(dataset, 1))[0]["data"]["submitJob"]["id"]
    latencies, errors, lock = {}, {}, threading.Lock()
    stop_at = time.time() + args.seconds
    jobs = [seed_job]

    def record(name, ok, error, took):
        with lock:
            latencies.setdefault(name, []).append(took)
            if not ok:
                key = f"{name}: {(error or {}).get('extensions', {}).get('code') or (error or {}).get('message', '')[:80]}"
                errors[key] = errors.get(key, 0) + 1

    def client(index):
        s = requests.Session()
        rng = random.Random(index)
        while time.time() < stop_at:
            roll = rng.random()
            if roll < 0.70:
                _, ok, error, took = gql(s, args.url, args.token,
                                         "query Jobs { jobs(first: 50) { edges { node { id status progress { step } } } } }",
                                         name="jobs")
                record("jobs(first: 50)", ok, error, took)
            elif roll < 0.82:
                _, ok, error, took = gql(s, args.url, args.token,
                                         "{ queueStats { running depth { priority count } } }")
                record("queueStats", ok, error, took)
            elif roll < 0.97:
                _, ok, error, took = gql(s, args.url, args.token,
                                         "query($id: ID!) { job(id: $id) { status queuePosition pendingReason } }",
                                         {"id": rng.choice(jobs)})
                record("job(id)", ok, error, took)
            else:
                body, ok, error, took = gql(s, args.url, args.token, SUBMIT, submit_input(dataset, 1))
                record("submitJob", ok, error, took)
                if ok:
                    with lock:
                        jobs.append(body["data"]["submitJob"]["id"])

    followers = max(1, args.clients // 10)
    counts = {"messages": 0, "errors": 0}

    async def subscribers():
        await asyncio.gather(*(follow(args.url, args.token, seed_job, args.seconds, counts, stop_at)
                               for _ in range(followers)))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients - followers)]
    started = time.time()
    for t in threads:
        t.start()
    asyncio.run(subscribers())
    for t in threads:
        t.join()
    elapsed = time.time() - started
    total = sum(len(v) for v in latencies.values())
    print(f"{args.clients} clients ({args.clients - followers} querying, {followers} subscribed) for "
          f"{elapsed:.0f} s against {args.url}: {total} requests ({total / elapsed:.0f}/s), "
          f"{sum(errors.values())} errors, {counts['errors']} subscription errors, "
          f"{counts['messages']} events received")
    for name in sorted(latencies):
        print(f"  {name:16} {percentiles(latencies[name])}")
    for key, n in sorted(errors.items()):
        print(f"  error x{n}: {key}")
    if counts.get("first_error"):
        print(f"  first subscription error: {counts['first_error']}")
    # Leave the queue as it was found.
    for job in jobs:
        gql(session, args.url, args.token, "mutation($id: ID!) { cancelJob(id: $id) { id } }", {"id": job})
    return 1 if errors or counts["errors"] else 0


def fanout(args):
    dataset = upload(args.url, args.token)
    session = requests.Session()
    # Queued first (paused workers aside, it waits behind nothing at URGENT), followed, then trained.
    body, ok, error, _ = gql(session, args.url, args.token, SUBMIT,
                             submit_input(dataset, args.epochs, "URGENT"))
    if not ok:
        raise SystemExit(f"submitJob failed: {error}")
    job_id = body["data"]["submitJob"]["id"]
    heard = {}  # epoch -> list of arrival times
    connected = {"n": 0, "errors": 0, "complete": 0}

    async def subscriber():
        try:
            async with websockets.connect(ws_url(args.url), subprotocols=["graphql-transport-ws"],
                                          open_timeout=60, max_queue=None) as ws:
                await ws.send(json.dumps({"type": "connection_init",
                                          "payload": {"Authorization": f"Bearer {args.token}"}}))
                await ws.recv()
                await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
                    "query": "subscription($id: ID!) { jobEvents(jobId: $id) { ... on EpochCompleted { metrics { epoch } } } }",
                    "variables": {"id": job_id}}}))
                connected["n"] += 1
                while True:
                    message = json.loads(await ws.recv())
                    if message.get("type") == "complete":
                        connected["complete"] += 1
                        return
                    if message.get("type") == "error":
                        connected["errors"] += 1
                        return
                    epoch = (((message.get("payload") or {}).get("data") or {}).get("jobEvents") or {}).get("metrics", {}).get("epoch")
                    if epoch is not None:
                        heard.setdefault(epoch, []).append(time.perf_counter())
        except Exception:
            connected["errors"] += 1

    async def run():
        tasks = [asyncio.create_task(subscriber()) for _ in range(args.subscribers)]
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=args.timeout)

    started = time.time()
    asyncio.run(run())
    print(f"{args.subscribers} subscribers on one job's jobEvents ({connected['n']} connected, "
          f"{connected['complete']} saw it complete, {connected['errors']} errors), "
          f"{time.time() - started:.0f} s:")
    delays = []
    for epoch in sorted(heard):
        times = sorted(heard[epoch])
        behind = [t - times[0] for t in times]
        delays.extend(behind)
        print(f"  epoch {epoch}: reached {len(times)} of {args.subscribers}; behind the first "
              f"{percentiles(behind)}")
    print(f"  all epochs: behind the first {percentiles(delays)}")
    reached_all = all(len(heard.get(e, [])) == args.subscribers for e in range(1, args.epochs + 1))
    return 0 if reached_all and connected["errors"] == 0 else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["mixed", "fanout"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--timeout", type=int, default=600)
    args = parser.parse_args()
    raise SystemExit(mixed(args) if args.mode == "mixed" else fanout(args))


if __name__ == "__main__":
    main()
