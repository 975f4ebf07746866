"""The report's VMs, for a sweep of a fleet inventory: per VM (the ``name``
column), the worst single operation, the worst RCU hold and the RCU stall
verdict per strategy, and per kernel when a VM ran on more than one."""

from __future__ import annotations

import polars as pl

from .summary import OK, Source, scan, sort_groups

# What a VM's verdicts are given per, when the dataset has the column and it varies.
PER = ("kernel", "strategy")


def has_vms(source: Source) -> bool:
    lf = scan(source)
    if "name" not in lf.collect_schema().names():
        return False
    return bool(lf.select(pl.col("name").is_not_null().any()).collect().item())


def vm_keys(source: Source) -> list[str]:
    """``name``, then the columns of PER that vary within a VM (strategy
    always; a kernel only when some VM ran on more than one)."""
    lf = scan(source).filter(pl.col("name").is_not_null())
    names = lf.collect_schema().names()
    keys = ["name"]
    for column in PER:
        if column == "strategy":
            keys.append(column)
        elif column in names:
            most = lf.group_by("name").agg(pl.col(column).n_unique()).select(pl.col(column).max())
            if (most.collect().item() or 0) > 1:
                keys.append(column)
    return keys


def vm_verdicts(source: Source) -> pl.DataFrame:
    """Per VM and strategy (and kernel): cells, errors, the worst
    ``max_op_ns`` and ``max_rcu_hold_ns`` over the VM's ok cells, and how many
    of them stall.  The VM whose worst operation is longest comes first."""
    lf = scan(source).filter(pl.col("name").is_not_null())
    keys = vm_keys(lf)

    def ok(name: str) -> pl.Expr:
        return pl.col(name).filter(OK)

    agg = lf.group_by(keys).agg(
        OK.sum().cast(pl.Int64).alias("cells"),
        (~OK).sum().cast(pl.Int64).alias("errors"),
        ok("max_op_ns").max().alias("worst_max_op_ns"),
        ok("max_rcu_hold_ns").max().alias("worst_max_rcu_hold_ns"),
        ok("rcu_stall").sum().cast(pl.Int64).alias("stalls"),
    )
    worst = agg.group_by("name").agg(pl.col("worst_max_op_ns").max().alias("_vm_worst"))
    ordered = sort_groups(agg, keys).join(worst, on="name", how="left", maintain_order="left")
    return (
        ordered.sort("_vm_worst", descending=True, nulls_last=True, maintain_order=True)
        .drop("_vm_worst")
        .collect()
    )


def vm_shapes(source: Source, columns: list[str] | None) -> pl.DataFrame:
    """Per VM, the values of the inventory's ``columns`` (its shape)."""
    lf = scan(source).filter(pl.col("name").is_not_null())
    present = lf.collect_schema().names()
    shown = [c for c in (columns or []) if c != "name" and c in present]
    return lf.group_by("name").agg(pl.col(c).first() for c in shown).collect()


__all__ = ["has_vms", "vm_keys", "vm_shapes", "vm_verdicts"]
