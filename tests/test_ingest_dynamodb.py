"""DynamoDB exports (full + two incremental windows, written here in AWS' format) into the contract.

Oracle: the test's own record of writes. The table at instant T is the fold of every write with
time <= T; restoring T through the weaver (restore_partition) must give exactly that.
"""

from __future__ import annotations

import gzip
import json
import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from tests.inject import crash_at
from tests.ingest_helpers import lake_fingerprint, lake_state, us, write_export
from weaver.core import storage
from weaver.ingest import Partitioning, ingest, load_watermark, read_ledger
from weaver.ingest.dynamodb import DynamoDBExport
from weaver.ingest.errors import (
    ChecksumMismatchError,
    MalformedInputError,
    MissingKeyAttributeError,
    StaleInputError,
    UnknownEventError,
    UnorderableKeyError,
    WatermarkGapError,
)
from weaver.core.settings import load_settings

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
T1, T2, T3 = T0 + timedelta(hours=1), T0 + timedelta(hours=2), T0 + timedelta(hours=3)


def item(pk: str, sk: int, n: int) -> dict:
    return {"pk": {"S": pk}, "sk": {"N": str(sk)}, "qty": {"N": str(n)}, "note": {"S": f"{pk}/{sk}#{n}"},
            "blob": {"B": "AAEC"}}


def make_writes(seed: int = 5) -> list[tuple[datetime, tuple, dict | None]]:
    """Writes before T0, and in each hour after it at most one write per item (see below)."""
    rng = random.Random(seed)
    keys = [(f"user#{i:03d}", sk) for i in range(12) for sk in (-5, 0, 7)]
    writes = []
    t = T0 - timedelta(hours=2)
    for k in keys:
        t += timedelta(seconds=rng.randint(1, 90), microseconds=rng.randint(0, 999_999))
        writes.append((t, k, item(*k, 1)))
    # Incremental exports keep one record per item per window (its last write), so each item is
    # written at most once per window here: then every instant, not only window ends, is exact.
    for h, start in enumerate((T0, T1, T2)):
        for k in rng.sample(keys, 14):
            when = start + timedelta(seconds=rng.randint(0, 3599), microseconds=rng.randint(0, 999_999))
            writes.append((when, k, None if rng.random() < 0.25 else item(*k, 10 + h)))
    writes.append((T1 + timedelta(minutes=30), ("new#1", 3), item("new#1", 3, 5)))
    return sorted(writes, key=lambda w: w[0])


def state_at(writes, at: datetime) -> dict:
    s = {}
    for t, (pk, sk), it in writes:
        if t <= at:
            if it is None:
                s.pop((pk, Decimal(sk)), None)
            else:
                s[(pk, Decimal(sk))] = it
    return s


def full_export(root, writes, at, export_id="01-full"):
    items = [{"Item": it} for it in state_at(writes, at - timedelta(microseconds=1)).values()]
    return write_export(root, export_id, table="orders", export_type="FULL_EXPORT", export_time=at,
                        lines_per_file=[items[::2], items[1::2]])


def incremental(root, writes, frm, to, export_id, view="NEW_AND_OLD_IMAGES"):
    last = {}
    for t, k, it in writes:
        if frm <= t < to:
            last[k] = (t, it)
    before = state_at(writes, frm - timedelta(microseconds=1))
    lines = []
    for (pk, sk), (t, it) in last.items():
        rec = {"Metadata": {"WriteTimestampMicros": {"N": str(us(t))}},
               "Keys": {"pk": {"S": pk}, "sk": {"N": str(sk)}}}
        if it is not None:
            rec["NewImage"] = it
        old = before.get((pk, Decimal(sk)))
        if view == "NEW_AND_OLD_IMAGES" and old is not None:
            rec["OldImage"] = old
        lines.append(rec)
    return write_export(root, export_id, table="orders", export_type="INCREMENTAL_EXPORT", from_time=frm,
                        to_time=to, view=view, lines_per_file=[lines[: len(lines) // 2], lines[len(lines) // 2:]])


@pytest.fixture()
def setup(tmp_path):
    writes = make_writes()
    root = tmp_path / "bucket"
    s = load_settings(lake=str(tmp_path / "lake"))
    return writes, root, s


def instants(writes, lo, hi):
    ts = [t for t, _, _ in writes if lo <= t <= hi]
    return [lo, hi] + ts[::3] + [t - timedelta(microseconds=1) for t in ts[1::4]]


def test_full_then_two_windows_restore_every_instant(setup):
    writes, root, s = setup
    from weaver.ingest.keys import boundaries_from_values

    part = Partitioning(boundaries=tuple(boundaries_from_values(["user#004", ["user#008", 0]])))
    r = ingest(s, DynamoDBExport(full_export(root, writes, T0), keys="pk,sk"), partitioning=part)
    assert r.changes_written == len(state_at(writes, T0)) and r.first_seq == 1 and r.old_watermark is None
    r1 = ingest(s, DynamoDBExport(incremental(root, writes, T0, T1, "02-inc"), keys="pk,sk"), partitioning=part)
    r2 = ingest(s, DynamoDBExport(incremental(root, writes, T1, T2, "03-inc", view="NEW_IMAGES"), keys="pk,sk"))
    assert r1.first_seq == r.last_seq + 1 and r2.first_seq == r1.last_seq + 1  # gap-free, continuing
    assert r2.new_watermark.startswith("2026-03-01T14:00:00") and r2.old_watermark == r1.new_watermark
    for at in instants(writes, T0, T2 - timedelta(microseconds=1)):
        assert lake_state(s, at) == state_at(writes, at), at
    log = storage.read(storage.uri_for(s, storage.CHANGELOG), storage.CHANGELOG)
    assert set(log.column("partition_id").to_pylist()) == {"p0000", "p0001", "p0002"}
    wm = load_watermark(s, "dynamodb-export:orders")
    assert wm.complete_to == T2 - timedelta(microseconds=1) and wm.batch == 3
    assert read_ledger(s).num_rows == 3

    # Re-ingesting the same input writes nothing.
    before = lake_fingerprint(s)
    again = ingest(s, DynamoDBExport(root / "AWSDynamoDB" / "02-inc", keys="pk,sk"))
    assert again.changes_written == 0 and again.duplicates_skipped == r1.records_read
    assert lake_fingerprint(s) == before

    # An overlapping window [T1 + 30 min, T3): the part below the watermark is skipped.
    r3 = ingest(s, DynamoDBExport(incremental(root, writes, T1 + timedelta(minutes=30), T3, "04-overlap"), keys="pk,sk"))
    in_overlap = {k for t, k, _ in writes if T1 + timedelta(minutes=30) <= t < T2}
    after = {k for t, k, _ in writes if T2 <= t < T3}
    # The export keeps each item's last write in its window: an item also written after T2 is new.
    assert r3.duplicates_skipped == len(in_overlap - after) > 0
    assert r3.changes_written == len(after)
    for at in instants(writes, T2, T3 - timedelta(microseconds=1)):
        assert lake_state(s, at) == state_at(writes, at), at

    # A different export of an already covered window is older than the watermark: refused.
    before = lake_fingerprint(s)
    with pytest.raises(StaleInputError, match="older than the watermark"):
        ingest(s, DynamoDBExport(incremental(root, writes, T0, T1, "05-reexport"), keys="pk,sk"))
    # A window after a gap: refused, naming both ends.
    with pytest.raises(WatermarkGapError, match="2026-03-01T16:00"):
        ingest(s, DynamoDBExport(incremental(root, writes, T3 + timedelta(hours=1), T3 + timedelta(hours=2), "06-gap"),
                                 keys="pk,sk"))
    # A full export after the source started: refused.
    with pytest.raises(StaleInputError, match="full export"):
        ingest(s, DynamoDBExport(full_export(root, writes, T3 + timedelta(minutes=5), "07-full"), keys="pk,sk"))
    assert lake_fingerprint(s) == before


def _corrupt(path, n_line, new_line):
    f = sorted((path / "data").glob("*.json.gz"))[0]
    lines = gzip.decompress(f.read_bytes()).decode().splitlines()
    lines[n_line - 1] = new_line
    raw = gzip.compress(("\n".join(lines) + "\n").encode())
    f.write_bytes(raw)
    # Keep the manifest consistent so the line itself is what fails.
    import base64
    import hashlib

    mf = path / "manifest-files.json"
    entries = [json.loads(x) for x in mf.read_text().splitlines()]
    entries[0]["md5Checksum"] = base64.b64encode(hashlib.md5(raw).digest()).decode()
    mf.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return f


@pytest.mark.parametrize("line,error", [
    ('{"Metadata": {"WriteTimestampMicros": {"N": "1"}', MalformedInputError),
    ('{"Metadata": {"WriteTimestampMicros": {"N": "Infinity"}}, "Keys": {"pk": {"S": "a"}, "sk": {"N": "1"}}}',
     MalformedInputError),
    ('{"Metadata": {"WriteTimestampMicros": {"N": "1e30"}}, "Keys": {"pk": {"S": "a"}, "sk": {"N": "1"}}}',
     MalformedInputError),
    ('{"Metadata": {"WriteTimestampMicros": {"N": "WHEN"}}, "Keys": {"pk": {"S": "\\udc00"}, "sk": {"N": "1"}}}',
     MalformedInputError),  # a lone surrogate in a deleted key
    ('{"Metadata": {"WriteTimestampMicros": {"N": "WHEN"}}, "Keys": {"pk": {"S": "a"}, "sk": {"N": "1"}}, '
     '"NewImage": {"pk": {"S": "a"}, "sk": {"N": "1"}, "v": {"S": "\\ud800"}}}', MalformedInputError),
    ('{"Event": "MODIFY"}', UnknownEventError),
    (None, MissingKeyAttributeError),
    (None, UnorderableKeyError),
])
def test_bad_lines_are_named_and_write_nothing(setup, line, error):
    writes, root, s = setup
    ingest(s, DynamoDBExport(full_export(root, writes, T0), keys="pk,sk"))
    d = incremental(root, writes, T0, T1, "02-inc")
    when = us(T0 + timedelta(seconds=5))
    if error is MissingKeyAttributeError:
        line = json.dumps({"Metadata": {"WriteTimestampMicros": {"N": str(when)}}, "Keys": {"pk": {"S": "x"}}})
    elif error is UnorderableKeyError:
        line = json.dumps({"Metadata": {"WriteTimestampMicros": {"N": str(when)}},
                           "Keys": {"pk": {"BOOL": True}, "sk": {"N": "1"}}})
    f = _corrupt(d, 2, line.replace("WHEN", str(when)))
    before = lake_fingerprint(s)
    with pytest.raises(error, match=f"{f.name}:2"):
        ingest(s, DynamoDBExport(d, keys="pk,sk"))
    assert lake_fingerprint(s) == before


def test_checksum_mismatch_is_named_and_writes_nothing(setup):
    writes, root, s = setup
    d = full_export(root, writes, T0)
    f = sorted((d / "data").glob("*.json.gz"))[1]
    f.write_bytes(f.read_bytes()[:-3] + b"xyz")
    with pytest.raises(ChecksumMismatchError, match=f.name):
        ingest(s, DynamoDBExport(d, keys="pk,sk"))
    assert not storage.is_table(storage.uri_for(s, storage.CHANGELOG))
    assert not storage.is_table(storage.uri_for(s, storage.PARTITIONS))


def test_crash_between_changelog_and_ledger_loses_nothing_and_duplicates_nothing(setup):
    writes, root, s = setup
    ingest(s, DynamoDBExport(full_export(root, writes, T0), keys="pk,sk"))
    inc = incremental(root, writes, T0, T1, "02-inc")

    # The crash point between the changelog commit and the ledger row (as tests/crash.py kills there).
    with crash_at("ingest.after_changelog"):
        ingest(s, DynamoDBExport(inc, keys="pk,sk"))
    assert read_ledger(s).num_rows == 1  # the ledger missed the second batch...
    again = ingest(s, DynamoDBExport(inc, keys="pk,sk"))  # ...the retry sees it committed
    assert again.records_read > 0 and again.changes_written == 0 and again.duplicates_skipped == again.records_read
    assert read_ledger(s).num_rows == 2  # and the ledger was rebuilt from the changelog commit
    log = storage.read(storage.uri_for(s, storage.CHANGELOG), storage.CHANGELOG)
    assert sorted(log.column("seq").to_pylist()) == list(range(1, log.num_rows + 1))
    assert lake_state(s, T1) == state_at(writes, T1)
