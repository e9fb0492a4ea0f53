"""The `bench all` report: targets judged from the suites' own declarations."""

from __future__ import annotations

from appliance.bench.report import judge, markdown, rows_for

HOST = {"cpu": "test cpu", "cores": 2, "python": "3.11", "system": "Linux"}


def test_judge_reads_the_operator() -> None:
    assert judge(">= 50000", 60000) is True
    assert judge(">= 50000", 49999.9) is False
    assert judge("<= 1.0", 1.0) is True
    assert judge("<= 1.0", 1.01) is False
    assert judge("== 0", 0) is True
    assert judge("== 0", 1) is False


def test_judge_refuses_what_it_cannot_compare() -> None:
    assert judge(">= 0.5", None) is None
    assert judge(">= 0.5", "fast") is None
    assert judge(">= 0.5", True) is None  # a bool is not a measurement
    assert judge("about right", 3.0) is None


def test_rows_and_table_show_failures_and_broken_suites() -> None:
    results = {
        "bus": {
            "throughput_msgs_per_s": 120000,
            "rtt_p99_ms": 2.5,
            "targets": {"throughput_msgs_per_s": ">= 50000", "rtt_p99_ms": "<= 1.0"},
        },
        "video": {"error": "exit 1: boom"},
        "network": {"skipped": "needs root", "targets": {}},
    }
    rows = rows_for("bus", results["bus"])
    assert [(r.figure, r.passed) for r in rows] == [("throughput_msgs_per_s", True), ("rtt_p99_ms", False)]
    table = markdown(results, HOST)
    assert "| bus | `rtt_p99_ms` | <= 1.0 | 2.5 | fail |" in table
    assert "| bus | `throughput_msgs_per_s` | >= 50000 | 120000 | pass |" in table
    assert "| video | (suite) | runs | exit 1: boom | fail |" in table
    assert "| network | (suite) | runs | skipped: needs root | n/a |" in table
    assert table.startswith("Machine: test cpu, 2 cores")


def test_targets_given_as_records_are_judged_from_the_figure() -> None:
    result = {"mae_c": 0.41, "targets": {"mae_c": {"target": "<= 0.3", "value": 0.41, "pass": True}}}
    [row] = rows_for("screening", result)
    assert (row.target, row.passed) == ("<= 0.3", False)  # the suite's own "pass" is not trusted
