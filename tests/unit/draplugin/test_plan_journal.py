"""The plans journal: a change is one line, a restart replays it, a crash at any byte loses at most the
change that was being written, and corruption is reported with the journal and the line named."""

from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path

import pytest
from draplugin_builders import DEVICES, DRIVER, NODE, claim, device

from draplugin.checkpoint import Checkpoint
from draplugin.model import ClaimPlan
from draplugin.planner import plan_claim
from draplugin.planstore import PlanStore
from draplugin.state.format import StateError, StateFile
from draplugin.state.plans import PLANS


def plan(name: str, *pods: str) -> ClaimPlan:
    return plan_claim(claim(name, device("nic", "macvlan-up0"), pods=pods), DRIVER, NODE, DEVICES)


def journal(path: Path) -> Path:
    return path.with_name(path.name + ".journal")


_REAL_WRITE = os.write


def half_then_enospc(fd: int, data: bytes) -> int:
    """A disk that fills up in the middle of a journal line."""
    _REAL_WRITE(fd, bytes(data)[: len(data) // 2])
    raise OSError(28, "No space left on device")


def state(path: Path) -> dict[str, ClaimPlan]:
    return Checkpoint(path).load()


async def test_a_change_appends_only_the_claims_it_touches(tmp_path: Path) -> None:
    path = tmp_path / "plans.json"
    store = PlanStore.open(Checkpoint(path))
    await store.put([plan(f"c{i}", f"pod-{i}") for i in range(20)])
    await store.fold()
    whole = path.read_bytes()
    assert journal(path).stat().st_size == 0
    await store.put([plan("new", "pod-new")])
    line = journal(path).read_bytes()
    assert line.count(b"\n") == 1 and b'"name":"new"' in line and b'"name":"c1"' not in line
    assert len(line) < len(whole) / 10
    assert path.read_bytes() == whole


async def test_a_restart_replays_puts_pod_changes_and_drops_in_order(tmp_path: Path) -> None:
    path = tmp_path / "plans.json"
    store = PlanStore.open(Checkpoint(path))
    a, b = plan("a", "pod-1"), plan("b", "pod-2")
    await store.put([a])
    await store.put([b])
    await store.set_pods(b.claim.uid, ["pod-2", "pod-3"])
    await store.drop([a.claim.uid])
    await store.put([a])
    await store.drop([a.claim.uid, "never-prepared"])
    assert journal(path).read_bytes().count(b"\n") == 6
    reopened = PlanStore.open(Checkpoint(path))
    assert reopened.all() == (dataclasses.replace(b, pod_uids=("pod-2", "pod-3")),)
    assert reopened.plans_for_pod("pod-3")[0].claim == b.claim
    assert journal(path).stat().st_size == 0, "opening folds the journal into the file"
    assert state(path) == {b.claim.uid: reopened.get(b.claim.uid)}


@pytest.mark.parametrize("damage", ["cut", "nul-padding", "cut-before-newline"])
async def test_a_torn_last_line_is_dropped_and_not_appended_after(tmp_path: Path, damage: str) -> None:
    """What a crash during the last append can leave: that change was never acknowledged."""
    path = tmp_path / "plans.json"
    store = PlanStore.open(Checkpoint(path))
    a, b = plan("a", "pod-1"), plan("b", "pod-2")
    await store.put([a])
    await store.put([b])
    raw = journal(path).read_bytes()
    first = raw.index(b"\n") + 1
    torn = {
        "cut": raw[: first + (len(raw) - first) // 2],
        "nul-padding": raw[:first] + b"\0" * 64,
        "cut-before-newline": raw[:first] + raw[first:-1][:-3],
    }[damage]
    journal(path).write_bytes(torn)
    checkpoint = Checkpoint(path)
    assert checkpoint.load() == {a.claim.uid: a}
    assert checkpoint.journal.due, "no line may follow the torn one"
    reopened = PlanStore.open(Checkpoint(path))
    assert reopened.all() == (a,)
    await reopened.put([b])
    assert PlanStore.open(Checkpoint(path)).all() == (a, b)


async def test_a_damaged_line_before_good_ones_is_corruption_naming_journal_and_line(tmp_path: Path) -> None:
    path = tmp_path / "plans.json"
    store = PlanStore.open(Checkpoint(path))
    await store.put([plan("a", "pod-1")])
    await store.put([plan("b", "pod-2")])
    await store.drop([plan("a").claim.uid])
    raw = journal(path).read_bytes()
    lines = raw.split(b"\n")
    for index, edit in ((0, b"pod-1"), (1, b"pod-2")):
        damaged = list(lines)
        damaged[index] = damaged[index].replace(edit, edit + b"x", 1)
        journal(path).write_bytes(b"\n".join(damaged))
        with pytest.raises(StateError) as caught:
            Checkpoint(path).load()
        message = str(caught.value)
        assert str(journal(path)) in message and f"line {index + 1}: checksum mismatch" in message, message
    journal(path).write_bytes(raw.replace(b'"drop":["', b'"drop":["x', 1))  # the last line: a torn tail
    assert set(Checkpoint(path).load()) == {plan("a").claim.uid, plan("b").claim.uid}


async def test_the_journal_is_folded_into_the_file_when_long(tmp_path: Path) -> None:
    path = tmp_path / "plans.json"
    store = PlanStore.open(Checkpoint(path, compact_lines=3))
    plans = [plan(f"c{i}", f"pod-{i}") for i in range(6)]
    for p in plans:
        await store.put([p])
    # three lines, the fourth change writes the whole file, then two lines again
    assert journal(path).read_bytes().count(b"\n") == 2
    assert {p.claim.name for p in StateFile(path, PLANS).load()} == {"c0", "c1", "c2", "c3"}
    assert set(Checkpoint(path).load()) == {p.claim.uid for p in plans}
    assert {p.claim.uid for p in PlanStore.open(Checkpoint(path)).all()} == {p.claim.uid for p in plans}


async def test_a_crash_between_the_file_and_emptying_the_journal_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every line sets or removes whole claims, so replaying lines the file already holds is harmless."""
    path = tmp_path / "plans.json"
    checkpoint = Checkpoint(path)
    store = PlanStore.open(checkpoint)
    a, b = plan("a", "pod-1"), plan("b", "pod-2")
    await store.put([a])
    await store.put([b])
    await store.drop([a.claim.uid])
    await store.put([a])
    await store.drop([b.claim.uid])
    expected = state(path)
    assert expected == {a.claim.uid: a}

    def crash() -> None:
        raise OSError(5, "killed")

    monkeypatch.setattr(checkpoint.journal, "reset", crash)
    with pytest.raises(OSError):
        await store.fold()
    assert journal(path).read_bytes().count(b"\n") == 5 and path.stat().st_size > 0
    assert state(path) == expected


async def test_a_failed_append_is_cut_back_and_memory_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "plans.json"
    store = PlanStore.open(Checkpoint(path))
    a, b = plan("a", "pod-1"), plan("b", "pod-2")
    await store.put([a])
    await store.put([b])
    before = journal(path).read_bytes()
    monkeypatch.setattr(os, "write", half_then_enospc)
    with pytest.raises(OSError, match="No space"):
        await store.put([plan("c", "pod-3")])
    monkeypatch.undo()
    assert journal(path).read_bytes() == before
    assert store.all() == (a, b)
    await store.drop([a.claim.uid])
    assert PlanStore.open(Checkpoint(path)).all() == (b,)


async def test_when_the_cut_back_fails_too_the_next_change_rewrites_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "plans.json"
    store = PlanStore.open(Checkpoint(path))
    a, b = plan("a", "pod-1"), plan("b", "pod-2")
    await store.put([a])
    await store.put([b])

    def no_truncate(fd: int, length: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "write", half_then_enospc)
    monkeypatch.setattr(os, "ftruncate", no_truncate)
    with pytest.raises(OSError, match="No space"):
        await store.put([plan("c", "pod-3")])
    monkeypatch.undo()
    await store.drop([a.claim.uid])  # not appended after the half line: the whole file, journal emptied
    assert journal(path).stat().st_size == 0
    assert PlanStore.open(Checkpoint(path)).all() == (b,)


async def test_a_crash_at_any_byte_of_the_journal_keeps_a_prefix_of_the_changes(tmp_path: Path) -> None:
    """Property: cutting the journal anywhere gives the state after some acknowledged prefix of the
    changes, never a state no sequence of changes produced; the full journal gives the final state."""
    path = tmp_path / "plans.json"
    store = PlanStore.open(Checkpoint(path, compact_lines=1000))
    rng = random.Random(22)
    names = [f"c{i}" for i in range(6)]
    await store.put([plan("seed", "pod-0")])
    await store.fold()  # the journal's lines then start from a file holding one claim
    after: list[dict[str, ClaimPlan]] = [state(path)]
    for step in range(40):
        name = rng.choice(names)
        if rng.random() < 0.35:
            await store.drop([plan(name).claim.uid])
        elif rng.random() < 0.5:
            await store.put([plan(name, f"pod-{step}")])
        elif not await store.set_pods(plan(name).claim.uid, [f"pod-{step}", "pod-x"]):
            continue
        after.append({p.claim.uid: p for p in store.all()})
    raw = journal(path).read_bytes()
    reached: set[int] = set()
    for cut in range(len(raw) + 1):
        journal(path).write_bytes(raw[:cut])
        loaded = state(path)
        assert loaded in after, f"cut at byte {cut} gave a state no prefix of the changes had"
        reached.add(after.index(loaded))
    assert state(path) == after[-1]
    assert len(reached) > 10
