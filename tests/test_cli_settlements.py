"""The settlement commands: `demo-data --settlements` writes the demo's gateway files and answer
key deterministically, and `settlements parse` prints canonical CSV or fails whole with one
line naming the file and line."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tieout.cli import main
from tieout.connectors.settlements import parse_file
from tieout.connectors.settlements.base import SETTLEMENT_COLUMNS, SettlementLine
from tieout.demo import DemoConfig, generate
from tieout.demo_settlements import SettlementDemo, generate_settlements

START = date(2026, 3, 1)
DEMO_ARGS = (
    "demo-data",
    "--billing-url",
    "sqlite:///billing.db",
    "--start",
    START.isoformat(),
    "--days",
    "10",
    "--customers",
    "20",
    "--settlements",
    "settle",
)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing from the environment or the repository: settings, runs and files stay in tmp."""
    for name in ("TIEOUT_SETTINGS", "DAGSTER_HOME", "BILLING_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def demo() -> SettlementDemo:
    """A demo with several files per gateway."""
    return generate_settlements(generate(DemoConfig(start=START, days=30, customers=150)))


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def write_files(demo: SettlementDemo, gateway: str, tmp_path: Path) -> list[Path]:
    """The demo's files of one gateway (lines only), under their demo names in tmp_path."""
    out = []
    for name, blob in demo.files.items():
        if name.startswith(f"{gateway}/") and demo.lines[name]:
            path = tmp_path / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(blob)
            out.append(path)
    assert len(out) >= 2, f"the demo has too few {gateway} files for these tests"
    return out


def csv_cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def expected_rows(gateway: str, paths: list[Path]) -> list[list[str]]:
    rows = []
    for path in paths:
        for line in parse_file(gateway, path.read_bytes(), str(path)).lines:
            rows.append([csv_cell(getattr(line, c)) for c in SETTLEMENT_COLUMNS])
    return rows


def read_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


# -- demo-data --settlements ---------------------------------------------------------------------


def test_demo_data_writes_the_settlement_files_and_answer_key(tmp_path: Path) -> None:
    result = invoke(*DEMO_ARGS)
    assert result.exit_code == 0, result.output
    data = generate(DemoConfig(start=START, days=10, seed=42, customers=20))
    demo = generate_settlements(data)
    settle = tmp_path / "settle"
    written = tree(settle)
    assert written.pop("answer_key.csv") == demo.answer_key_csv()
    assert written == demo.files
    assert demo.files  # the demo does have settlement files
    header = (settle / "answer_key.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header == "kind,gateway,payment_id,invoice_id,line_id,batch_id,detail"
    for name in demo.files:
        assert (settle / name).parent.parent == settle  # settle/<gateway>/<file>
    assert (tmp_path / "billing.db").is_file()

    counts: dict[str, int] = {}
    for name in demo.files:
        counts[name.split("/")[0]] = counts.get(name.split("/")[0], 0) + 1
    files = " ".join(f"{g}_files={n}" for g, n in sorted(counts.items()))
    billing_counts = " ".join(f"{k}={v}" for k, v in data.counts().items())
    assert result.stdout.splitlines() == [
        billing_counts,
        f"{files} settlement_lines={len(demo.all_lines())} discrepancies={len(demo.answer_key)}",
    ]


def test_demo_data_settlements_are_byte_identical_when_run_again(tmp_path: Path) -> None:
    assert invoke(*DEMO_ARGS).exit_code == 0
    first = tree(tmp_path / "settle")
    assert len(first) > 1
    again = invoke(*DEMO_ARGS)
    assert again.exit_code == 0, again.output
    assert tree(tmp_path / "settle") == first


# -- settlements parse ---------------------------------------------------------------------------


def test_parse_prints_the_canonical_csv_of_one_file(demo: SettlementDemo, tmp_path: Path) -> None:
    [path, *_] = write_files(demo, "adyen", tmp_path)
    result = invoke("settlements", "parse", "--gateway", "adyen", str(path))
    assert result.exit_code == 0, result.output
    rows = read_csv(result.stdout)
    assert tuple(rows[0]) == SETTLEMENT_COLUMNS
    assert rows[1:] == expected_rows("adyen", [path])
    parsed: tuple[SettlementLine, ...] = parse_file("adyen", path.read_bytes(), str(path)).lines
    assert len(rows) == len(parsed) + 1
    gross = rows[0].index("gross_minor")
    assert [int(r[gross]) for r in rows[1:]] == [ln.gross_minor for ln in parsed]
    assert f"{path}: adyen.settlement_detail_report, {len(parsed)} line(s)" in result.stderr


@pytest.mark.parametrize("gateway", ["stripe", "adyen", "paypal", "braintree"])
def test_parse_of_several_files_prints_one_header_then_every_row(
    demo: SettlementDemo, tmp_path: Path, gateway: str
) -> None:
    paths = write_files(demo, gateway, tmp_path)
    result = invoke("settlements", "parse", "--gateway", gateway, *map(str, paths))
    assert result.exit_code == 0, result.output
    rows = read_csv(result.stdout)
    assert tuple(rows[0]) == SETTLEMENT_COLUMNS
    assert list(SETTLEMENT_COLUMNS) not in rows[1:]
    want = expected_rows(gateway, paths)
    assert rows[1:] == want
    assert len(want) == sum(len(demo.lines[p.relative_to(tmp_path).as_posix()]) for p in paths)


def test_parse_warns_about_a_payout_that_does_not_tie_out(
    demo: SettlementDemo, tmp_path: Path
) -> None:
    [mismatch] = [
        a for a in demo.answer_key if a.kind == "payout_mismatch" and a.gateway == "stripe"
    ]
    name = next(n for n in demo.files if n.startswith("stripe/") and mismatch.batch_id in n)
    path = tmp_path / "payout.csv"
    path.write_bytes(demo.files[name])
    result = invoke("settlements", "parse", "--gateway", "stripe", str(path))
    assert result.exit_code == 0, result.output
    warnings = [ln for ln in result.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1, result.stderr
    assert str(path) in warnings[0]
    assert mismatch.batch_id in warnings[0]


def test_parse_out_writes_the_csv_to_the_file(demo: SettlementDemo, tmp_path: Path) -> None:
    paths = write_files(demo, "paypal", tmp_path)
    out = tmp_path / "lines.csv"
    result = invoke(
        "settlements", "parse", "--gateway", "paypal", "--out", str(out), *map(str, paths)
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    rows = read_csv(out.read_text(encoding="utf-8"))
    assert tuple(rows[0]) == SETTLEMENT_COLUMNS
    assert rows[1:] == expected_rows("paypal", paths)
    # The same bytes as standard output would have given.
    to_stdout = invoke("settlements", "parse", "--gateway", "paypal", *map(str, paths))
    assert out.read_text(encoding="utf-8") == to_stdout.stdout


# -- bad files -----------------------------------------------------------------------------------


def truncated_stl(blob: bytes) -> bytes:
    """The STL without its report footer, count and file footer (a cut-off download)."""
    lines = blob.decode("utf-8").splitlines()
    assert [ln.split(",")[0] for ln in lines[-3:]] == ['"RF"', '"RC"', '"FF"']
    return ("\n".join(lines[:-3]) + "\n").encode("utf-8")


def garbled_adyen(blob: bytes) -> tuple[bytes, int]:
    """The SDR with a non-numeric Gross Credit on its first credit row; and that row's line."""
    rows = read_csv(blob.decode("utf-8"))
    col = rows[0].index("Gross Credit (GC)")
    i = next(i for i, r in enumerate(rows) if i and r[col])
    rows[i][col] = "12,3O"
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue().encode("utf-8"), i + 1


def test_parse_of_a_truncated_paypal_file_exits_2_naming_file_and_line(
    demo: SettlementDemo, tmp_path: Path
) -> None:
    [good, *_] = write_files(demo, "paypal", tmp_path)
    bad = tmp_path / "STL-cut.CSV"
    bad.write_bytes(truncated_stl(good.read_bytes()))
    result = invoke("settlements", "parse", "--gateway", "paypal", str(bad))
    assert result.exit_code == 2
    [line] = error_lines(result)
    assert str(bad) in line
    nlines = len(bad.read_bytes().decode("utf-8").splitlines())
    assert f"line {nlines}" in line
    assert "truncated" in line
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_parse_of_an_adyen_file_with_a_bad_amount_exits_2_naming_file_and_line(
    demo: SettlementDemo, tmp_path: Path
) -> None:
    [good, *_] = write_files(demo, "adyen", tmp_path)
    blob, lineno = garbled_adyen(good.read_bytes())
    bad = tmp_path / "garbled.csv"
    bad.write_bytes(blob)
    result = invoke("settlements", "parse", "--gateway", "adyen", str(bad))
    assert result.exit_code == 2
    [line] = error_lines(result)
    assert str(bad) in line
    assert f"line {lineno}" in line
    assert "Gross Credit" in line
    assert result.stdout == ""


def test_a_later_bad_file_leaves_no_partial_csv(demo: SettlementDemo, tmp_path: Path) -> None:
    goods = write_files(demo, "adyen", tmp_path)
    blob, lineno = garbled_adyen(goods[0].read_bytes())
    bad = tmp_path / "garbled.csv"
    bad.write_bytes(blob)
    result = invoke("settlements", "parse", "--gateway", "adyen", *map(str, goods), str(bad))
    assert result.exit_code == 2
    assert result.stdout == ""  # not even the header: every file is parsed before output
    [line] = error_lines(result)
    assert str(bad) in line
    assert f"line {lineno}" in line
    # With --out nothing is written either.
    out = tmp_path / "lines.csv"
    again = invoke(
        "settlements", "parse", "--gateway", "adyen", "--out", str(out), str(goods[0]), str(bad)
    )
    assert again.exit_code == 2
    assert not out.exists()
    assert again.stdout == ""


def test_parse_of_a_missing_file_exits_2(tmp_path: Path) -> None:
    result = invoke("settlements", "parse", "--gateway", "adyen", str(tmp_path / "nope.csv"))
    assert result.exit_code == 2
    [line] = error_lines(result)
    assert "nope.csv" in line
    assert result.stdout == ""


def test_parse_with_an_unknown_gateway_is_a_usage_error(
    demo: SettlementDemo, tmp_path: Path
) -> None:
    [path, *_] = write_files(demo, "adyen", tmp_path)
    result = invoke("settlements", "parse", "--gateway", "worldpay", str(path))
    assert result.exit_code == 2
    assert "Invalid value for '--gateway'" in result.stderr
    assert "worldpay" in result.stderr
    assert result.stdout == ""


def test_parse_needs_gateway_and_files(tmp_path: Path) -> None:
    assert invoke("settlements", "parse", "x.csv").exit_code == 2
    assert invoke("settlements", "parse", "--gateway", "adyen").exit_code == 2


# -- help ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["parse", "load"])
def test_settlements_help(command: str) -> None:
    result = invoke("settlements", command, "--help")
    assert result.exit_code == 0, result.output
    assert f"settlements {command} [OPTIONS]" in result.output


def test_settlements_group_help_lists_its_commands() -> None:
    result = invoke("settlements", "--help")
    assert result.exit_code == 0
    assert "parse" in result.output
    assert "load" in result.output


# -- load, files, forget --------------------------------------------------------------------------


def test_load_then_list_quarantine_and_forget(tmp_path: Path) -> None:
    settings = tmp_path / "settings.toml"
    settings.write_text(
        "[billing]\n"
        'url = "sqlite:///billing.db"\n'
        "partitions_start = 2026-02-01\n"
        '[lake]\nroot = "lake"\n'
        '[settlements]\npath = "settle"\n'
        '[state]\nurl = "sqlite:///state.db"\n',
        encoding="utf-8",
    )
    assert invoke(*DEMO_ARGS).exit_code == 0
    files = sorted(p for p in (tmp_path / "settle").rglob("*") if p.is_file())
    gateway_files = [p for p in files if p.name != "answer_key.csv"]
    bad = tmp_path / "settle" / "paypal" / "STL-cut.CSV"
    bad.write_text('"RH",2026/03/02 02:00:00 +0000,"A","X",009\n', encoding="utf-8")
    end = (START + timedelta(days=9)).isoformat()
    cfg = ("--settings", str(settings))
    result = invoke(*cfg, "settlements", "load", "--start", START.isoformat(), "--end", end)
    assert result.exit_code == 0, result.output
    assert f"{len(gateway_files)} new file(s) loaded" in result.stdout
    assert "1 file(s) quarantined" in result.stdout
    assert (tmp_path / "lake" / "settlements" / "lines" / f"date={START}").is_dir()
    listed = list(csv.DictReader(io.StringIO(invoke(*cfg, "settlements", "files").stdout)))
    assert len(listed) == len(gateway_files) + 1
    (q,) = invoke(*cfg, "settlements", "files", "--status", "quarantined").stdout.splitlines()[1:]
    assert "STL-cut.CSV" in q
    assert "truncated" in q or "line" in q
    sha = q.split(",")[0]
    # Loading again reads nothing new; forgetting the bad file makes the next load re-read it.
    again = invoke(*cfg, "settlements", "load", "--start", START.isoformat(), "--end", end)
    assert "new file(s) loaded" not in again.stdout
    forgot = invoke(*cfg, "settlements", "forget", sha)
    assert forgot.exit_code == 0
    assert "STL-cut.CSV" in forgot.stdout
    bad.unlink()
    after = invoke(*cfg, "settlements", "files", "--status", "quarantined").stdout.splitlines()
    assert after == [after[0]]
    unknown = invoke(*cfg, "settlements", "forget", "ffffffffffff")
    assert unknown.exit_code == 2
    assert "no file registered" in unknown.stderr
