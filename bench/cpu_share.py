#!/usr/bin/env python
"""How much of the machine's CPU a command uses, and when it leaves cores idle.

    python bench/cpu_share.py --out runs/cpu-share-before -- python train.py --preset cpu --time-budget-min 4 ...

Runs the command, timestamps each line it prints, and every `--interval` seconds reads the CPU
time (user + system) of the command and all its descendants from /proc. Writes, under --out:
`timeline.csv` (seconds since start; the command's CPU share of the interval in percent of one
core; the machine's iowait and steal in percent of all cores; the command's threads waiting on
the disk (state D); the last line printed), `output.log` (each line with its time, the command
run unbuffered so times are true) and `summary.json`; prints the summary:
the whole command's share (what `/usr/bin/time -v` calls "Percent of CPU this job got") and the
seconds spent below one core and near zero, so a blocking phase stands out. Linux only.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_tree_cpu_seconds(root_pid: int) -> float:
    """User + system CPU seconds of `root_pid` and its live descendants (children that already
    exited and were waited for count in their parent's cutime/cstime)."""
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        pid, ppid = int(entry), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
        times[pid] = (utime + stime + cutime + cstime) / CLOCK_TICKS
    total, stack = 0.0, [root_pid]
    while stack:
        pid = stack.pop()
        total += times.get(pid, 0.0)
        stack.extend(children.get(pid, []))
    return total


def machine_ticks() -> list[int]:
    """/proc/stat's first line: user nice system idle iowait irq softirq steal ... (ticks)."""
    with open("/proc/stat") as f:
        return [int(v) for v in f.readline().split()[1:]]


def threads_waiting_on_disk(root_pid: int) -> int:
    """Threads of `root_pid` in uninterruptible sleep (state D: waiting for I/O, e.g. an fsync)."""
    count = 0
    try:
        tasks = os.listdir(f"/proc/{root_pid}/task")
    except OSError:
        return 0
    for task in tasks:
        try:
            stat = Path(f"/proc/{root_pid}/task/{task}/stat").read_text()
        except OSError:
            continue
        count += stat[stat.rindex(")") + 2] == "D"
    return count


def idle_breakdown(rows: list[tuple[float, float]], cores: int) -> dict:
    """Where a command left cores idle, from its timeline: `rows` of (seconds since start, share
    of the interval ending then, percent of one core).

    Returns:
        idle_core_seconds: core-seconds unused over the whole command;
        flat_out_seconds, flat_out_median_percent: the intervals at >= 85% of all cores;
        idle_core_seconds_flat_out, idle_core_seconds_in_dips: the idle split between them;
        dip_seconds: the time below 85% of all cores (start-up, stalls, the end's single-core work);
        percent_without_dips: the whole command's share had every dip run at the flat-out median.
    """
    full = 100.0 * cores
    intervals = [(share, t - previous_t) for (previous_t, _), (t, share) in itertools.pairwise([(0.0, 0.0), *rows])]
    flat_out = [(share, dt) for share, dt in intervals if share >= 0.85 * full]
    dips = [(share, dt) for share, dt in intervals if share < 0.85 * full]
    shares = sorted(share for share, _ in flat_out)
    median = shares[len(shares) // 2] if shares else 0.0
    wall = sum(dt for _, dt in intervals)
    cpu = sum(share / 100.0 * dt for share, dt in intervals)
    lifted = cpu + sum(max(0.0, median - share) / 100.0 * dt for share, dt in dips)

    def idle(part):
        return sum(max(0.0, full - share) / 100.0 * dt for share, dt in part)

    return {
        "idle_core_seconds": round(idle(intervals), 1),
        "flat_out_seconds": round(sum(dt for _, dt in flat_out), 1),
        "flat_out_median_percent": round(median, 1),
        "idle_core_seconds_flat_out": round(idle(flat_out), 1),
        "idle_core_seconds_in_dips": round(idle(dips), 1),
        "dip_seconds": round(sum(dt for _, dt in dips), 1),
        "percent_without_dips": round(100.0 * lifted / wall, 1) if wall else 0.0,
    }


def summarize(out: Path) -> dict:
    """The idle breakdown of an earlier measurement's timeline.csv, merged into its summary.json."""
    with open(out / "timeline.csv", newline="") as f:
        rows = [(float(r["seconds"]), float(r["cpu_percent"])) for r in csv.DictReader(f)]
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    summary.update(idle_breakdown(rows, summary.get("cores") or os.cpu_count()))
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="folder for timeline.csv, output.log and summary.json")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between samples (default 2)")
    parser.add_argument("--summarize", metavar="DIR",
                        help="print the idle breakdown of an earlier measurement in DIR (its timeline.csv) and exit")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args(argv)
    if args.summarize:
        if not (Path(args.summarize) / "timeline.csv").is_file():
            parser.error(f"--summarize {args.summarize}: no timeline.csv there; give a folder cpu_share.py wrote")
        print(json.dumps(summarize(Path(args.summarize)), indent=2))
        return 0
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or not args.out:
        parser.error("give --out DIR and the command to measure after --")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    start = time.monotonic()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                               env=env)
    last_line = [""]

    def copy_output():
        with open(out / "output.log", "w") as log:
            for line in process.stdout:
                line = line.rstrip("\n")
                stamp = time.monotonic() - start
                log.write(f"{stamp:8.1f}  {line}\n")
                log.flush()
                print(f"{stamp:8.1f}  {line}", flush=True)
                if line.strip():
                    last_line[0] = line.strip()[-120:]

    reader = threading.Thread(target=copy_output, daemon=True)
    reader.start()
    samples = []  # (seconds since start, CPU seconds so far, iowait %, steal %, threads in D, last line)
    cpu = 0.0
    ticks = machine_ticks()
    while process.poll() is None:
        time.sleep(args.interval)
        now = time.monotonic() - start
        # A reading can miss a child that exited between samples; never let the total go back.
        cpu = max(cpu, process_tree_cpu_seconds(process.pid))
        new_ticks = machine_ticks()
        delta = [b - a for a, b in zip(ticks, new_ticks, strict=False)]
        ticks, total = new_ticks, max(1, sum(delta))
        samples.append((now, cpu, 100.0 * delta[4] / total, 100.0 * delta[7] / total,
                        threads_waiting_on_disk(process.pid), last_line[0]))
    reader.join(timeout=10)
    wall = time.monotonic() - start
    children = os.times()
    total_cpu = children.children_user + children.children_system  # exact, as time -v reports it

    rows, below_one_core, near_zero, near_zero_waiting = [], 0.0, 0.0, 0.0
    previous_t, previous_cpu = 0.0, 0.0
    for t, c, iowait, steal, blocked, line in samples:
        dt = t - previous_t
        share = 100.0 * (c - previous_cpu) / dt if dt > 0 else 0.0
        rows.append((t, share, iowait, steal, blocked, line))
        below_one_core += dt if share < 100.0 else 0.0
        near_zero += dt if share < 20.0 else 0.0
        near_zero_waiting += dt if share < 20.0 and (blocked or iowait >= 10.0) else 0.0
        previous_t, previous_cpu = t, c
    with open(out / "timeline.csv", "w") as f:
        f.write("seconds,cpu_percent,iowait_percent,steal_percent,threads_in_d,last_line\n")
        for t, share, iowait, steal, blocked, line in rows:
            f.write(f"{t:.1f},{share:.0f},{iowait:.0f},{steal:.0f},{blocked},\"{line.replace(chr(34), chr(39))}\"\n")
    summary = {
        "command": command,
        "exit_code": process.returncode,
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(total_cpu, 1),
        "cpu_percent": round(100.0 * total_cpu / wall, 1),
        "cores": os.cpu_count(),
        "seconds_below_one_core": round(below_one_core, 1),
        "seconds_near_zero": round(near_zero, 1),
        "seconds_near_zero_waiting_on_disk": round(near_zero_waiting, 1),
        "interval_s": args.interval,
        **idle_breakdown([(t, share) for t, share, *_ in rows], os.cpu_count()),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return process.returncode


if __name__ == "__main__":
    sys.exit(main())
