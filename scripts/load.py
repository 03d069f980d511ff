#!/usr/bin/env python3
"""Load and fan-out figures for a running kiln (scripts/bench-load starts one, or a stack, and runs this).

  load.py mixed  --url URL --token T [--clients 200] [--seconds 60]
      Many clients at once for a while: each loops over GraphQL queries (`jobs(first: 50)` mostly,
      `queueStats`, `job(id)`), submits now and then, and one in ten follows a job's `jobEvents` over
      WebSocket. Prints requests, errors and latency percentiles per operation.

  load.py fanout --url URL --token T [--subscribers 1000] [--epochs 5]
      That many WebSocket subscribers on one job's `jobEvents`; the job trains; for each epoch, how
      long after the first subscriber each of the others heard it (p50, p99, max), and whether all did.

  load.py restart --url URL --token T
      Restarts the machine's Postgres (pg_ctlcluster, as root) while a job trains on the kiln at URL,
      which must use that Postgres (scripts/stack): what clients get while it is down, how soon kiln
      answers again without being restarted, and whether the running job keeps its progress.

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


def submitted(session, args, dataset, epochs, priority):
    """Submits a load job and returns its id, or stops the script saying why not."""
    body, ok, error, _ = gql(session, args.url, args.token, SUBMIT, submit_input(dataset, epochs, priority))
    if not ok:
        raise SystemExit(f"submitJob failed: {error}")
    return body["data"]["submitJob"]["id"]


def percentiles(values):
    if not values:
        return "n=0"
    values = sorted(values)
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))] * 1000
    return (f"n={len(values)} p50={pick(0.50):.1f}ms p95={pick(0.95):.1f}ms "
            f"p99={pick(0.99):.1f}ms max={values[-1] * 1000:.1f}ms")


def ws_url(url):
    return url.replace("http://", "ws://").replace("https://", "wss://") + "/graphql"


def connect(url):
    return websockets.connect(ws_url(url), subprotocols=["graphql-transport-ws"], open_timeout=60,
                              max_queue=None)


async def subscribe(ws, token, query, job_id):
    """Signs in on an open graphql-transport-ws socket and subscribes to `query` for the job."""
    await ws.send(json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}))
    await ws.recv()
    await ws.send(json.dumps({"id": "1", "type": "subscribe",
                              "payload": {"query": query, "variables": {"id": job_id}}}))


async def follow(url, token, job_id, seconds, counts, stop_at):
    """One WebSocket follower of a job's events, until stop_at."""
    try:
        async with connect(url) as ws:
            await subscribe(ws, token, "subscription($id: ID!) { jobEvents(jobId: $id) { __typename } }", job_id)
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
    # The only worker is kept busy by a blocker until every subscriber follows the measured job.
    blocker = submitted(session, args, dataset, 1000, "URGENT")
    job_id = submitted(session, args, dataset, args.epochs, "HIGH")
    heard = {}  # epoch -> list of arrival times
    connected = {"n": 0, "errors": 0, "complete": 0}

    async def subscriber():
        try:
            async with connect(args.url) as ws:
                await subscribe(ws, args.token, "subscription($id: ID!) { jobEvents(jobId: $id) "
                                "{ __typename ... on EpochCompleted { epoch } } }", job_id)
                connected["n"] += 1
                if connected["n"] == args.subscribers:
                    all_in.set()
                while True:
                    message = json.loads(await ws.recv())
                    if message.get("type") == "complete":
                        connected["complete"] += 1
                        return
                    if message.get("type") == "error":
                        connected["errors"] += 1
                        return
                    event = ((message.get("payload") or {}).get("data") or {}).get("jobEvents") or {}
                    if message.get("payload", {}).get("errors"):
                        connected["errors"] += 1
                        return
                    epoch = event.get("epoch") if event.get("__typename") == "EpochCompleted" else None
                    if epoch is not None:
                        heard.setdefault(epoch, []).append(time.perf_counter())
        except Exception:
            connected["errors"] += 1

    all_in = None

    async def run():
        nonlocal all_in
        all_in = asyncio.Event()
        tasks = [asyncio.create_task(subscriber()) for _ in range(args.subscribers)]
        await asyncio.wait_for(all_in.wait(), timeout=args.timeout)
        print(f"  {args.subscribers} subscribers follow job {job_id}; freeing the worker")
        await asyncio.get_running_loop().run_in_executor(None, lambda: gql(
            session, args.url, args.token, "mutation($id: ID!) { cancelJob(id: $id) { id } }", {"id": blocker}))
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


def restart(args):
    import glob
    import subprocess
    dataset = upload(args.url, args.token)
    session = requests.Session()
    job_id = submitted(session, args, dataset, 400, "URGENT")
    JOB = "query($id: ID!) { job(id: $id) { status attempts error progress { step } } }"

    def job():
        body, ok, error, _ = gql(session, args.url, args.token, JOB, {"id": job_id})
        return (body["data"]["job"] if ok else None), error

    for _ in range(600):
        current, _ = job()
        if current and (current.get("progress") or {}).get("step", 0) >= 20:
            break
        time.sleep(0.1)
    else:
        raise SystemExit("the job did not start training")
    before = current["progress"]["step"]
    version = sorted(glob.glob("/etc/postgresql/*"))[-1].rsplit("/", 1)[1]
    control = lambda action: subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action], check=True)
    print(f"job {job_id} RUNNING at step {before}; stopping Postgres {version}")
    control("stop")
    down_at = time.time()
    codes, polls = {}, 0
    while time.time() - down_at < args.down:
        for query in ("query Jobs { jobs(first: 50) { edges { node { id } } } }",
                      "{ queueStats { running } }"):
            _, ok, error, took = gql(session, args.url, args.token, query)
            polls += 1
            key = "ok" if ok else ((error or {}).get("extensions") or {}).get("code", (error or {}).get("message", "?")[:60])
            codes[key] = codes.get(key, 0) + 1
        time.sleep(0.2)
    control("start")
    up_at = time.time()
    print(f"Postgres down {up_at - down_at:.1f} s: {polls} queries answered {codes}")
    recovered = None
    while time.time() - up_at < 120:
        _, ok, _, _ = gql(session, args.url, args.token, "{ queueStats { running } }")
        if ok:
            recovered = time.time() - up_at
            break
        time.sleep(0.1)
    print(f"kiln answered again {recovered:.1f} s after Postgres was back (no kiln process restarted)"
          if recovered is not None else "kiln did NOT answer within 120 s of Postgres coming back")
    after, seen = None, None
    while time.time() - up_at < 120:
        seen, _ = job()
        after = (seen or {}).get("progress", {}) or {}
        if seen and after.get("step", 0) > before + 20:
            break
        time.sleep(0.5)
    print(f"the job after the outage: {seen['status'] if seen else '?'}, attempt {seen and seen['attempts']}, "
          f"step {after.get('step')} (was {before} before the outage), error {seen and seen['error']}")
    gql(session, args.url, args.token, "mutation($id: ID!) { cancelJob(id: $id) { id } }", {"id": job_id})
    kept = bool(seen) and seen["status"] == "RUNNING" and after.get("step", 0) > before
    return 0 if recovered is not None and kept and "ok" not in codes else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["mixed", "fanout", "restart"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--timeout", type=int, default=600)
    parser.add_argument("--down", type=float, default=8.0, help="seconds Postgres stays down")
    args = parser.parse_args()
    raise SystemExit({"mixed": mixed, "fanout": fanout, "restart": restart}[args.mode](args))


if __name__ == "__main__":
    main()
