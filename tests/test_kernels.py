"""Kernel presets: each setting checked against the behaviour it claims, the
YAML files against the engine's reading of them and against the history
written out here, and the README against the commits they name.

The behaviours are checked on the reference engine's results (and the fast
engine's, which must equal them): a preset's strategy by the visits of the
spec's worked examples, A/D write-back by its counts, the mmu_lock mode by
the atomic writes it costs, flushes by their count, serial and parallel
root zaps by ``wall_ns``, and the contention rule by whether a waiter for
mmu_lock makes the zap yield.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from engine import (
    Scenario,
    ScenarioError,
    available_kernels,
    event_counts,
    kernel_preset,
    load_cost_model,
    simulate,
)
from engine.kernel import SETTING_KEYS, kernel_dir, parse_preset

ROOT = Path(__file__).parents[1]
KERNELS = ("5.15", "5.18", "6.6", "6.9", "6.9-prove-mmu", "6.13", "6.14")
ALL_MODELS = ("none", "voluntary", "full")

# What the kernel's history says, one row per preset (kernel-history: the
# strategy, A/D write-back, flushes inside an operation; per trigger the
# mmu_lock mode, a flush before a yield and how roots are zapped; the
# preemption models and those under which a waiting mmu_lock is honoured).
HISTORY = {
    "5.15": dict(
        strategy=("root",), ad=True, flush_on_remove=True,
        memslot=("read", False, "serial"), vm_destroy=("write", True, "serial"),
        models=ALL_MODELS, honoured=("full",),
    ),
    "5.18": dict(
        strategy=("1G", "root"), ad=True, flush_on_remove=False,
        memslot=("read", False, "parallel"), vm_destroy=("write", False, "serial"),
        models=ALL_MODELS, honoured=ALL_MODELS,
    ),
    "6.6": dict(
        strategy=("1G", "root"), ad=True, flush_on_remove=False,
        memslot=("read", False, "serial"), vm_destroy=("write", False, "serial"),
        models=ALL_MODELS, honoured=ALL_MODELS,
    ),
    "6.9": dict(
        strategy=("4K", "2M", "1G", "root"), ad=True, flush_on_remove=False,
        memslot=("read", False, "serial"), vm_destroy=("write", False, "serial"),
        models=ALL_MODELS, honoured=ALL_MODELS,
    ),
    "6.9-prove-mmu": dict(
        strategy=("1G", "root"), ad=True, flush_on_remove=False,
        memslot=("read", False, "serial"), vm_destroy=("write", False, "serial"),
        models=ALL_MODELS, honoured=ALL_MODELS,
    ),
    "6.13": dict(
        strategy=("4K", "2M", "1G", "root"), ad=False, flush_on_remove=False,
        memslot=("read", False, "serial"), vm_destroy=("write", False, "serial"),
        models=(*ALL_MODELS, "lazy"), honoured=("full", "lazy"),
    ),
    "6.14": dict(
        strategy=("4K", "2M", "1G", "root"), ad=False, flush_on_remove=False,
        memslot=("read", False, "serial"), vm_destroy=("write", False, "serial"),
        models=(*ALL_MODELS, "lazy"), honoured=("full", "lazy"),
    ),
}  # fmt: skip

# Visits of the spec's worked examples (section 8: a fully populated 1 GiB
# guest of 4K pages, 4-level, 46 bits, resched=never), by strategy.
VISITS = {("root",): 128, ("1G", "root"): 768, ("4K", "2M", "1G", "root"): 265216}


def worked_example(kernel: str, **kw) -> Scenario:
    return Scenario(
        kernel=kernel,
        guest_memory="1GiB",
        accessed_ratio=0.0,
        dirty_ratio=0.0,
        resched="never",
        **kw,
    )


def both(scenario: Scenario, cost_model="seed-2022"):
    """The reference engine's result, checked equal to the fast engine's."""
    ref = simulate(scenario, "reference", cost_model)
    assert simulate(scenario, "fast", cost_model) == ref, scenario
    return ref


def test_the_presets_are_the_seven_kernels_in_version_order() -> None:
    assert available_kernels() == KERNELS


# -- the files, the engine and the history agree ------------------------------------


@pytest.mark.parametrize("name", KERNELS)
def test_the_engine_reads_each_yaml_as_written(name) -> None:
    raw = yaml.safe_load((kernel_dir() / f"{name}.yaml").read_text())
    preset = kernel_preset(name)
    assert preset == parse_preset(raw, name)
    for trigger in ("memslot", "vm_destroy"):
        fields = preset.scenario_fields(trigger)
        assert {k: fields[k] for k in ("mmu_lock", "flush_on_yield", "root_zap")} == raw[trigger]
        for key in ("zap_levels", "ad_writeback", "flush_on_remove"):
            assert fields[key] == raw[key]
    assert list(preset.preempt_models) == raw["preempt_models"]
    assert list(preset.contention_honoured) == raw["contention_honoured"]
    assert {k: list(v) for k, v in preset.commits} == raw["commits"]


@pytest.mark.parametrize("name", KERNELS)
def test_each_preset_says_what_the_history_says(name) -> None:
    h, p = HISTORY[name], kernel_preset(name)
    for trigger in ("memslot", "vm_destroy"):
        s = Scenario(kernel=name, trigger=trigger)
        assert s.zap_levels == h["strategy"]
        assert (s.mmu_lock, s.flush_on_yield, s.root_zap) == h[trigger]
        assert s.ad_writeback is h["ad"] and s.flush_on_remove is h["flush_on_remove"]
    assert p.preempt_models == h["models"] and p.contention_honoured == h["honoured"]


def setting_comments(text: str) -> dict[str, str]:
    """The comment lines right above each setting line of a preset file,
    by setting key ("zap_levels", "memslot.mmu_lock", ...)."""
    out, comment, block = {}, [], None
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            comment.append(line)
            continue
        m = re.match(r"^( *)([a-z_]+):", line)
        if m:
            indent, key = m.groups()
            if not indent:
                block = key
            name = f"{block}.{key}" if indent else key
            out[name] = "\n".join(comment)
        comment = []
    return out


@pytest.mark.parametrize("name", KERNELS)
def test_every_setting_names_its_commits_in_the_yaml_comments_too(name) -> None:
    """The comment above each setting line names (one of) its commits."""
    comments = setting_comments((kernel_dir() / f"{name}.yaml").read_text())
    commits = dict(kernel_preset(name).commits)
    assert set(commits) == set(SETTING_KEYS)
    for key, ids in commits.items():
        assert any(c in comments[key] for c in ids), (name, key, ids, comments[key])


def test_the_readme_lists_every_commit_the_presets_name() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### What the model assumes")[1].split("\n## ")[0]
    named = {c for k in KERNELS for _, ids in kernel_preset(k).commits for c in ids}
    missing = sorted(c for c in named if c not in section)
    assert not missing, f"commits not in README's 'What the model assumes': {missing}"
    assert all(re.fullmatch(r"[0-9a-f]{12}", c) for c in named)


def test_a_preset_file_that_misses_or_misspells_a_setting_is_refused() -> None:
    raw = yaml.safe_load((kernel_dir() / "6.6.yaml").read_text())
    for broken, field in (
        ({k: v for k, v in raw.items() if k != "ad_writeback"}, "keys"),
        ({**raw, "memslot": {**raw["memslot"], "root_zap": "sometimes"}}, "memslot.root_zap"),
        ({**raw, "contention_honoured": ["lazy"]}, "contention_honoured"),
        ({**raw, "commits": {**raw["commits"], "zap_levels": ["abc"]}}, "commits.zap_levels"),
    ):
        with pytest.raises(ScenarioError) as err:
            parse_preset(broken, "6.6")
        assert field in err.value.field


# -- each setting does what it claims ---------------------------------------------


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("trigger", ["memslot", "vm_destroy"])
def test_strategy_visits_are_the_worked_examples(name, trigger) -> None:
    r = both(worked_example(name, trigger=trigger))
    assert r.visits == VISITS[HISTORY[name]["strategy"]]
    assert r.leaf_zapped == 262144 and r.tables_freed == 514


@pytest.mark.parametrize("name", KERNELS)
def test_ad_writeback_counts_and_costs(name) -> None:
    s = Scenario(kernel=name, guest_memory="16MiB", accessed_ratio=1.0, dirty_ratio=0.5)
    r = both(s)
    if HISTORY[name]["ad"]:
        assert r.accessed_writebacks == r.leaf_zapped == 4096
        assert 0 < r.dirty_writebacks < r.leaf_zapped
    else:
        assert r.accessed_writebacks == r.dirty_writebacks == 0
    # Against the other setting, given explicitly: only the write-backs differ.
    other = both(dataclasses.replace(s, ad_writeback=not HISTORY[name]["ad"]))
    cm = load_cost_model("seed-2022")
    written = max(r, other, key=lambda x: x.accessed_writebacks)
    extra = written.accessed_writebacks * cm.accessed_writeback_ps
    extra += written.dirty_writebacks * cm.dirty_writeback_ps
    assert abs(r.total_ns - other.total_ns) * 1000 == pytest.approx(extra, abs=1000)


@pytest.mark.parametrize("name", KERNELS)
def test_mmu_lock_mode_costs_the_atomic_writes_of_read(name) -> None:
    """memslot zaps under read: every SPTE write an atomic exchange;
    vm_destroy under write: none.  The same trigger with the lock mode given
    explicitly differs by exactly those writes."""
    cm = load_cost_model("seed-2022")
    for trigger in ("memslot", "vm_destroy"):
        s = Scenario(kernel=name, trigger=trigger, guest_memory="64MiB", resched="never")
        mode = HISTORY[name][trigger][0]
        flipped = dataclasses.replace(s, mmu_lock="write" if mode == "read" else "read")
        r, f = both(s), both(flipped)
        atomic = event_counts(r, s)["atomic_write_ns"]
        assert (atomic > 0) == (mode == "read")
        read, write = (r, f) if mode == "read" else (f, r)
        writes = read.ops + read.removed_entries_scanned
        flush = read.tlb_flushes - write.tlb_flushes  # 5.15 flushes per zapped SPTE in read
        cost = writes * cm.atomic_write_ps + flush * cm.flush_ps(s.running_vcpus)
        assert (read.total_ns - write.total_ns) * 1000 == pytest.approx(cost, abs=1000)


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("trigger", ["memslot", "vm_destroy"])
def test_flushes_are_where_the_kernel_issues_them(name, trigger) -> None:
    """A contended CPU and 64 vCPUs: every flush the kernel would issue shows."""
    s = Scenario(kernel=name, trigger=trigger, guest_memory="64MiB", resched="always", vcpus=64)
    r = both(s)
    h = HISTORY[name]
    inline = 0
    if h["flush_on_remove"]:
        inline = r.tables_freed + (r.ops if s.mmu_lock == "read" else 0)
    assert r.tlb_flushes >= inline
    before_yields = r.tlb_flushes - inline
    if h[trigger][1]:  # a flush before each yield that follows a clear
        assert 0 < before_yields <= r.yields
    else:
        assert before_yields == 0
    if name == "5.15":
        assert r.tlb_flushes > 0
    else:
        assert r.tlb_flushes == 0
    # A flush waits for the running vCPUs: 64 for a memslot update, none at
    # destruction.
    cm = load_cost_model("seed-2022")
    per_vcpu = event_counts(r, s)["flush_per_vcpu_ns"]
    assert per_vcpu == r.tlb_flushes * (64 if trigger == "memslot" else 0)
    assert per_vcpu * cm.flush_per_vcpu_ps <= r.total_ns * 1000


def test_5_15_flushes_inside_the_operation_that_removes_the_tables() -> None:
    """One operation removes the 1 GiB guest's 514 tables: with a flush per
    table it is longer than without by exactly those flushes."""
    s = worked_example("5.15")
    r = both(s)
    without = both(dataclasses.replace(s, flush_on_remove=False))
    cm = load_cost_model("seed-2022")
    flushes = r.tables_freed + r.ops  # read mode: one more per SPTE the walk zaps
    assert r.tlb_flushes - without.tlb_flushes == flushes == 514 + 1
    assert (r.max_op_ns - without.max_op_ns) * 1000 == pytest.approx(
        flushes * cm.flush_ps(1), abs=1000
    )


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("trigger", ["memslot", "vm_destroy"])
def test_serial_and_parallel_roots_in_wall_ns(name, trigger) -> None:
    """An SMM root as populated as the main one: serial root zaps take the
    sum of the roots' times, parallel workers the slowest root's."""
    s = Scenario(
        kernel=name, trigger=trigger, guest_memory="64MiB", smm_populated_ratio=1.0,
        resched="never",
    )  # fmt: skip
    r = both(s)
    main, smm = (both(dataclasses.replace(root, smm_populated_ratio=0.0)) for root in s.roots)
    assert r.roots_zapped == 2 and main.roots_zapped == smm.roots_zapped == 1
    assert r.leaf_zapped == main.leaf_zapped + smm.leaf_zapped
    assert main.total_ns + smm.total_ns <= r.total_ns <= main.total_ns + smm.total_ns + 1
    if HISTORY[name][trigger][2] == "parallel":
        assert r.wall_ns == max(main.total_ns, smm.total_ns) < r.total_ns
    else:
        assert r.wall_ns == r.total_ns
    # Each root under its own RCU read-side section.
    assert r.max_rcu_hold_ns == max(main.max_rcu_hold_ns, smm.max_rcu_hold_ns)


@pytest.mark.parametrize("name", KERNELS)
def test_contention_is_honoured_under_the_kernel_s_rule(name) -> None:
    """resched=never: only a waiter for mmu_lock can make the zap yield."""
    p = kernel_preset(name)
    for model in p.preempt_models:
        s = Scenario(
            kernel=name, guest_memory="16MiB", resched="never", lock_contention_us=5,
            preempt=model,
        )  # fmt: skip
        r = both(s)
        assert (r.yields > 0) == (model in HISTORY[name]["honoured"]), model
    if "lazy" not in p.preempt_models:
        with pytest.raises(ScenarioError) as err:
            Scenario(kernel=name, preempt="lazy")
        assert err.value.field == "preempt" and "voluntary" in err.value.allowed


def test_one_yield_answers_need_resched_and_the_waiter() -> None:
    """Contention and tick raise need-break independently; a yield clears
    both: both together yield more than either alone, and less than the two."""
    base = dict(guest_memory="64MiB", zap_levels="per_level", resched="tick")
    tick = both(Scenario(**base, resched_interval_us=23))
    lock = both(Scenario(**base, resched_interval_us=10**9, lock_contention_us=37))
    together = both(Scenario(**base, resched_interval_us=23, lock_contention_us=37))
    assert (tick.yields, lock.yields, together.yields) == (49, 29, 77)
    assert max(tick.yields, lock.yields) < together.yields < tick.yields + lock.yields
    # Equal periods: the two raise at the same instants, one yield each.
    same = both(Scenario(**base, resched_interval_us=23, lock_contention_us=23))
    assert same == tick


def test_6_14_behaves_as_6_13_in_every_modelled_setting() -> None:
    for trigger in ("memslot", "vm_destroy"):
        a = Scenario(kernel="6.13", trigger=trigger)
        b = Scenario(kernel="6.14", trigger=trigger)
        assert dataclasses.replace(a, kernel="6.14") == b


# -- presets, explicit fields, Part I ---------------------------------------------------


def test_explicit_fields_override_the_preset_and_are_no_error() -> None:
    s = Scenario(kernel="6.13", zap_levels="root", mmu_lock="write", ad_writeback=True)
    assert s.zap_levels == ("root",) and s.mmu_lock == "write" and s.ad_writeback
    assert Scenario(kernel="5.18", root_zap="serial").root_zap == "serial"
    assert Scenario(kernel="5.15", flush_on_remove=False).flush_on_remove is False


def test_zap_levels_kernel_is_the_preset_s_strategy() -> None:
    assert Scenario(kernel="6.9", zap_levels="kernel") == Scenario(kernel="6.9")
    assert Scenario(kernel="6.9", paging_levels=5).zap_levels == ("4K", "2M", "1G", "root")
    with pytest.raises(ScenarioError) as err:
        Scenario(zap_levels="kernel")
    assert err.value.field == "zap_levels" and "kernel" in err.value.allowed


def test_no_kernel_is_part_i() -> None:
    s = Scenario()
    assert (s.zap_levels, s.mmu_lock, s.flush_on_yield) == (("1G", "root"), "write", False)
    assert (s.ad_writeback, s.root_zap, s.flush_on_remove, s.roots) == (True, "serial", False, (s,))
    assert s == Scenario(zap_levels="two_pass", mmu_lock="write", flush_on_yield=False)


@pytest.mark.parametrize(
    "kw, field, allowed",
    [
        (dict(kernel="7.0"), "kernel", "6.14"),
        (dict(kernel=6.6), "kernel", "6.6"),
        (dict(trigger="reboot"), "trigger", "vm_destroy"),
        (dict(preempt="rt"), "preempt", "voluntary"),
        (dict(kernel="6.6", preempt="lazy"), "preempt", "full"),
        (dict(lock_contention_us=0), "lock_contention_us", "null"),
        (dict(lock_contention_us=-3), "lock_contention_us", "null"),
        (dict(smm_populated_ratio=1.5), "smm_populated_ratio", "[0, 1]"),
        (dict(smm_populated_ratio=-0.1), "smm_populated_ratio", "[0, 1]"),
        (dict(root_zap="async"), "root_zap", "parallel"),
        (dict(ad_writeback="no"), "ad_writeback", "true or false"),
        (dict(flush_on_remove=1), "flush_on_remove", "true or false"),
    ],
)
def test_bad_values_name_the_field_and_what_is_allowed(kw, field, allowed) -> None:
    with pytest.raises(ScenarioError) as err:
        Scenario(**kw)
    assert err.value.field == field and allowed in err.value.allowed
    assert field in str(err.value)


def test_the_smm_root_is_drawn_independently_over_the_same_slots() -> None:
    s = Scenario(guest_memory="64MiB", populated_ratio=0.5, smm_populated_ratio=0.5, layout="q35")
    main, smm = s.roots
    assert smm.slots == tuple(dataclasses.replace(m, populated_ratio=0.5) for m in main.slots)
    assert smm.seed != main.seed and smm.smm_populated_ratio == 0.0
    a, b = both(dataclasses.replace(main, smm_populated_ratio=0.0)), both(smm)
    assert a.leaf_zapped != b.leaf_zapped or a.dirty_writebacks != b.dirty_writebacks
