"""The code version recorded with a sweep (sweeps.git_commit / git_dirty)."""

import subprocess

from orchestrator.run.provenance import PROJECT_DIR, git_state


def test_git_state_reads_the_checkout_it_runs_from(monkeypatch):
    monkeypatch.delenv("RESWEEP_GIT_COMMIT", raising=False)
    monkeypatch.delenv("RESWEEP_GIT_DIRTY", raising=False)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_DIR, capture_output=True,
                          text=True, check=True).stdout.strip()
    commit, dirty = git_state()
    assert commit == head
    assert isinstance(dirty, bool)


def test_git_state_prefers_what_submit_passed_for_a_copy_without_git(monkeypatch):
    # A Ray job runs from a copy of the project with no .git: submit exports the submitter's state.
    monkeypatch.setenv("RESWEEP_GIT_COMMIT", "0123abc")
    monkeypatch.setenv("RESWEEP_GIT_DIRTY", "1")
    assert git_state() == ("0123abc", True)
    monkeypatch.setenv("RESWEEP_GIT_DIRTY", "0")
    assert git_state() == ("0123abc", False)
