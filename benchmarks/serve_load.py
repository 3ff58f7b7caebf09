"""Load test of the online server: `mixtune serve` (dynamic batching on and off) against `mlflow models
serve` on the same registered version and inputs, in one run, then the alias moved twice under load.

    make demo    # a champion in .mixtune
    python benchmarks/serve_load.py [--workdir .mixtune] [--config configs/demo.yaml]
                                    [--concurrency 1 8 32] [--requests 256] [--seconds 90]
                                    [--poll 2] [--swap-seconds 40] [--json out.json]

- The state folder is copied to a temporary one first (the registry gets a second version for the
  alias moves; the user's own state is not touched).
- Servers, one at a time on the same machine: `python -m components.serve` (what `mixtune serve` runs)
  with the config's serve.* settings (batching on), the same with serve.max_batch=1 (off: each request
  generated alone), and `mlflow models serve -m models:/<name>/<version> --env-manager local` (one
  worker, MLflow's default). Each is warmed up with 8 requests, then loaded at each concurrency.
- Load: an aiohttp client with C connections, each posting one dialogue per request
  ({"inputs": [dialogue]}, the generated support chats the demo trains on) until --requests are
  answered or --seconds pass. requests/s = answered / wall time; latency = send to full answer.
- Alias moves: `mixtune serve` following `champion` (serve.poll_seconds = --poll) under concurrency 8;
  a third into the load the alias moves to the second version, two thirds in `rollback` moves it back.
  Reported: failed requests, and the time from each move to the first answer naming the new version.
Goals (issue 17): at concurrency 32, >= 3x the requests/s of mlflow models serve with a p99 no worse;
during the moves 0 failed requests and the new version named within two poll intervals.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from components.common.config import load_config  # noqa: E402
from pipelines.embedded import free_ports, stop_group  # noqa: E402
from pipelines.local import local_services  # noqa: E402
from pipelines.sample_data import generate as sample_chats  # noqa: E402

HEADER = "X-Mixtune-Model-Version"
BIN = Path(sys.executable).parent


def dialogues(n: int) -> list[str]:
    return ["\n".join(f"{m['role'].title()}: {m['content']}" for m in c["messages"]) for c in sample_chats(n, seed=99)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


async def load(url: str, texts: list[str], concurrency: int, max_requests: int, seconds: float,
               events: list | None = None) -> list[tuple[float, float, int, str | None]]:
    """(sent, answered, status, version) per request; `events` = [(at_seconds, callable)] run meanwhile."""
    import aiohttp

    rows: list[tuple[float, float, int, str | None]] = []
    sent = 0
    start = time.time()
    deadline = start + seconds

    async def client(worker: int, session) -> None:
        nonlocal sent
        while sent < max_requests and time.time() < deadline:
            i = sent
            sent += 1
            t0 = time.time()
            try:
                async with session.post(f"{url}/invocations", json={"inputs": [texts[i % len(texts)]]}) as r:
                    await r.read()
                    rows.append((t0, time.time(), r.status, r.headers.get(HEADER)))
            except aiohttp.ClientError:
                rows.append((t0, time.time(), 0, None))

    async def timed(at: float, action) -> None:
        await asyncio.sleep(max(0.0, start + at - time.time()))
        await asyncio.get_running_loop().run_in_executor(None, action)

    timeout = aiohttp.ClientTimeout(total=max(seconds, 60) + 120)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency), timeout=timeout) as session:
        await asyncio.gather(*(client(w, session) for w in range(concurrency)),
                             *(timed(at, action) for at, action in events or []))
    return rows


def summarize(rows: list, concurrency: int) -> dict:
    ok = [r for r in rows if r[2] == 200]
    latencies = [r[1] - r[0] for r in ok]
    wall = max(r[1] for r in rows) - min(r[0] for r in rows) if rows else 0.0
    return {"concurrency": concurrency, "requests": len(rows), "failed": len(rows) - len(ok),
            "rps": round(len(ok) / wall, 3) if wall else 0.0,
            "p50_s": round(percentile(latencies, 50), 3) if ok else None,
            "p95_s": round(percentile(latencies, 95), 3) if ok else None,
            "p99_s": round(percentile(latencies, 99), 3) if ok else None,
            "mean_s": round(statistics.fmean(latencies), 3) if ok else None}


class Server:
    def __init__(self, label: str, cmd: list[str], port: int, env: dict, log: Path):
        self.label, self.url = label, f"http://127.0.0.1:{port}"
        self.log = open(log, "w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 300.0) -> None:
        import urllib.request

        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                self.log.flush()
                tail = Path(self.log.name).read_text()[-3000:]
                raise RuntimeError(f"{self.label} exited with {self.proc.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.label} not ready after {timeout:.0f} s; see {self.log.name}")

    def stop(self) -> None:
        stop_group(self.proc, timeout=60)
        self.log.close()


def copy_state(workdir: Path, into: Path) -> Path:
    if not (workdir / "mlflow.db").exists() or not (workdir / "s3").is_dir():
        sys.exit(f"{workdir}: no state (mlflow.db and s3/): run `make demo` first")
    shutil.copytree(workdir / "s3", into / "s3", ignore=shutil.ignore_patterns("*.log", "s3.json"))
    shutil.copy2(workdir / "mlflow.db", into / "mlflow.db")
    return into


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default=".mixtune")
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--requests", type=int, default=256, help="per server and concurrency")
    p.add_argument("--seconds", type=float, default=90.0, help="per server and concurrency, at most")
    p.add_argument("--dialogues", type=int, default=64)
    p.add_argument("--poll", type=float, default=2.0, help="serve.poll_seconds during the alias moves")
    p.add_argument("--swap-seconds", type=float, default=40.0)
    p.add_argument("--skip-mlflow", action="store_true")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    texts = dialogues(args.dialogues)
    results: dict = {"command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "servers": {}}

    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        state = copy_state(Path(args.workdir).resolve(), Path(tmp))
        cfg = load_config(args.config, {"tracking.uri": f"sqlite:///{state / 'mlflow.db'}"})
        with local_services(cfg, state) as cfg:
            from mlflow.tracking import MlflowClient

            from components.common.registry import REPLACED_TAG, resolve
            from components.common.tracking import connect
            from components.register.aliases import rollback

            connect(cfg)
            name = cfg.registry.model_name
            champion = resolve(name, "champion", fetch=False)
            if champion is None:
                sys.exit(f"{name} has no champion in {args.workdir}: run `make demo` first")
            client = MlflowClient()
            # The same files as a second version: the alias moves need somewhere to go.
            copy = str(client.create_model_version(name, source=champion.uri, tags=champion.tags).version)
            client.set_model_version_tag(name, copy, REPLACED_TAG, champion.version)
            config_file = state / "config.yaml"
            config_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
            env = {**os.environ, "MLFLOW_TRACKING_URI": cfg.tracking.uri, "TQDM_DISABLE": "1",
                   "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")])}
            results.update(model=f"{name} v{champion.version}", serve=cfg.serve.model_dump(exclude={"kubernetes"}),
                           generation=cfg.infer.model_dump(exclude={"prompt", "model"}), cpus=os.cpu_count())

            ours = [sys.executable, "-m", "components.serve", "--config", str(config_file),
                    "--set", f"serve.model={champion.version}"]
            servers = {"mixtune serve (batching)": ours,
                       "mixtune serve (no batching)": ours + ["--set", "serve.max_batch=1"]}
            if not args.skip_mlflow:
                servers["mlflow models serve"] = [str(BIN / "mlflow"), "models", "serve", "-m",
                                                  f"models:/{name}/{champion.version}", "--env-manager", "local"]
            for label, cmd in servers.items():
                port = free_ports(1)[0]
                server = Server(label, cmd + ["--port" if "components.serve" in cmd else "-p", str(port)], port,
                                env, state / f"{label.split()[0]}-{port}.log")
                try:
                    server.wait_ready()
                    asyncio.run(load(server.url, texts, 4, 8, 120))  # warm-up
                    cells = []
                    for c in args.concurrency:
                        cells.append(summarize(asyncio.run(load(server.url, texts, c, args.requests, args.seconds)), c))
                        print(f"{label:28s} c={c:<3d} {json.dumps(cells[-1])}", flush=True)
                    results["servers"][label] = cells
                finally:
                    server.stop()

            port = free_ports(1)[0]
            follow = [sys.executable, "-m", "components.serve", "--config", str(config_file),
                      "--set", f"serve.poll_seconds={args.poll}", "--port", str(port)]
            server = Server("follow", follow, port, env, state / f"follow-{port}.log")
            moves: list[tuple[float, str]] = []

            def move(version: str, how):
                moves.append((time.time(), version))
                how()

            try:
                server.wait_ready()
                events = [(args.swap_seconds / 3, lambda: move(copy, lambda: client.set_registered_model_alias(
                               name, "champion", copy))),
                          (2 * args.swap_seconds / 3, lambda: move(champion.version, lambda: rollback(
                               cfg, reason="serve_load benchmark")))]
                rows = sorted(asyncio.run(load(server.url, texts, 8, 10**9, args.swap_seconds, events)))
            finally:
                server.stop()
            switches = []
            for at, version in moves:
                answered = [got for sent, got, status, v in rows if sent >= at and v == version]
                switches.append(round(min(answered) - at, 3) if answered else None)
            results["alias_moves"] = {**summarize(rows, 8), "poll_seconds": args.poll,
                                      "versions": [v for _, v in moves], "seconds_to_new_version": switches}
            print(f"alias moves: {json.dumps(results['alias_moves'])}", flush=True)

    report(results, max(args.concurrency))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def report(results: dict, top: int) -> None:
    print(f"\n{results['command']}  ({results['model']}, {results['cpus']} CPUs)")
    print(f"{'server':28s} {'c':>3s} {'req/s':>8s} {'p50 s':>7s} {'p95 s':>7s} {'p99 s':>7s} {'failed':>6s}")
    for label, cells in results["servers"].items():
        for c in cells:
            print(f"{label:28s} {c['concurrency']:>3d} {c['rps']:>8.2f} {c['p50_s']:>7.3f} {c['p95_s']:>7.3f} "
                  f"{c['p99_s']:>7.3f} {c['failed']:>6d}")
    servers = results["servers"]
    if "mlflow models serve" in servers:
        ours = next(c for c in servers["mixtune serve (batching)"] if c["concurrency"] == top)
        theirs = next(c for c in servers["mlflow models serve"] if c["concurrency"] == top)
        ratio = ours["rps"] / theirs["rps"] if theirs["rps"] else float("inf")
        print(f"goal at c={top}: requests/s {ratio:.2f}x mlflow models serve (>= 3x: "
              f"{'met' if ratio >= 3 else 'NOT met'}); p99 {ours['p99_s']:.3f} s vs {theirs['p99_s']:.3f} s "
              f"({'met' if ours['p99_s'] <= theirs['p99_s'] else 'NOT met'})")
    moves = results["alias_moves"]
    within = all(s is not None and s <= 2 * moves["poll_seconds"] for s in moves["seconds_to_new_version"])
    print(f"goal during the alias moves: {moves['failed']} failed of {moves['requests']} "
          f"({'met' if moves['failed'] == 0 else 'NOT met'}); new version named after "
          f"{moves['seconds_to_new_version']} s, poll {moves['poll_seconds']} s "
          f"({'met' if within else 'NOT met'}: within two poll intervals)")


if __name__ == "__main__":
    main()
