"""A sweep survives what kills its processes: a torn journal tail, a worker killed with SIGKILL, a killed
launcher."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import optuna
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

from terramind_ft.sweep.search import HEARTBEAT_FILE, repair_journal, worker_is_gone


def _journal_study(path):
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))
    return optuna.create_study(study_name="s", storage=storage, load_if_exists=True)


def test_a_torn_journal_tail_is_repaired_and_the_study_opens(tmp_path):
    path = tmp_path / "journal.log"
    study = _journal_study(path)
    for x in (0.1, 0.2):
        study.enqueue_trial({"x": x})
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    with open(path, "ab") as f:
        f.write(b'{"op_code": 4, "worker_id": "abc", "trial_id"')  # a writer killed mid-append
    study = _journal_study(path)  # the next writer appends behind the fragment ...
    try:
        study.enqueue_trial({"x": 0.3})
    except ValueError:  # ... and reads json.JSONDecodeError back
        pass
    try:
        _journal_study(path)
        raise AssertionError("optuna opened the torn journal: the test no longer shows the problem")
    except ValueError:  # json.JSONDecodeError from then on: what users saw, forever
        pass
    kept = repair_journal(path, JournalFileOpenLock(str(path)))
    lines = path.read_bytes().splitlines()
    assert kept > 4 and all(json.loads(line) for line in lines)  # every line left is a whole record
    backups = list(tmp_path.glob("journal.log.corrupt-*"))
    assert len(backups) == 1 and backups[0].read_bytes().startswith(b'{"op_code": 4')
    trials = _journal_study(path).trials
    assert [t.params["x"] for t in trials[:2]] == [0.1, 0.2] and len(trials) == 3  # the glued record is kept too
    before = path.read_bytes()
    assert repair_journal(path, JournalFileOpenLock(str(path))) > 4 and path.read_bytes() == before  # left alone
    assert len(list(tmp_path.glob("journal.log.corrupt-*"))) == 1


def test_a_worker_killed_with_sigkill_is_seen_at_once(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    beat = tmp_path / HEARTBEAT_FILE
    beat.write_text(json.dumps({"host": socket.gethostname(), "pid": proc.pid, "time": time.time(), "stopped": False}))
    assert not worker_is_gone(tmp_path)
    proc.kill()
    proc.wait()
    assert worker_is_gone(tmp_path)  # a fresh heartbeat, but its process no longer exists
    beat.write_text(json.dumps({"host": "another-node", "pid": proc.pid, "time": time.time()}))
    assert not worker_is_gone(tmp_path)  # another host's process cannot be checked: the heartbeat age decides


def test_a_local_worker_dies_with_its_killed_launcher(tmp_path):
    launcher = textwrap.dedent("""
        import os, subprocess, sys, time
        code = ("import sys, time; from terramind_ft.sweep.launch import die_with_parent; "
                "die_with_parent(0.1, parent=int(sys.argv[1])); time.sleep(60)")
        child = subprocess.Popen([sys.executable, "-c", code, str(os.getpid())])
        print(child.pid, flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", launcher], stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())
    time.sleep(1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    end = time.time() + 20
    while time.time() < end:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(child, signal.SIGKILL)
    raise AssertionError("the worker kept running after its launcher was killed")
