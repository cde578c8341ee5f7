"""``benchmarks.serve_h2load``: the gRPC framing of h2load's request bodies, h2load's log and
report as the real tool writes them, the plan of h2load processes, and the figures of a rate.

The captured samples below are from h2load 1.52.0 (Debian 12's ``nghttp2-client``) loading the
floor server (``python -m benchmarks.serve_floor``) with ``h2load_argv``'s command: 10 requests
at 20 rps, then 60 requests of which the server, stopped after 1 s, answered 20."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.serve_h2load import (
    GRPC_HEADERS,
    H2loadRate,
    H2loadResult,
    LogRow,
    Summary,
    body_users,
    grpc_frame,
    grpc_unframe,
    h2load_argv,
    parse_log,
    parse_summary,
    plan_processes,
    request_body,
    send_lags_ms,
)
from benchmarks.serve_load import LoadResult
from benchmarks.serve_measure import FLOOR, PIPELINE, h2load_rate_figures, within_target
from serving.proto import recommender_pb2 as pb

CAPTURED_LOG = """\
1796286890818351\t200\t1149
1796286890868965\t200\t719
1796286890919120\t200\t816
1796286890969082\t200\t841
1796286891019356\t200\t765
1796286891069585\t200\t865
1796286891118678\t200\t789
1796286891169183\t200\t636
1796286891219251\t200\t788
1796286891269303\t200\t691
"""

CAPTURED_REPORT = """\
starting benchmark...
spawning thread #0: 1 total client(s). 10 total requests
Application protocol: h2c
progress: 10% done
progress: 100% done

finished in 452.34ms, 22.11 req/s, 17.84KB/s
requests: 10 total, 10 started, 10 done, 10 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 10 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 8.07KB (8265) total, 105B (105) headers (space savings 87.04%), 7.30KB (7480) data
                     min         max         mean         sd        +/- sd
time for request:      636us      1.15ms       806us       139us    80.00%
time for connect:      191us       191us       191us         0us   100.00%
time to 1st byte:     1.38ms      1.38ms      1.38ms         0us   100.00%
req/s           :      22.12       22.12       22.12        0.00   100.00%
"""

CAPTURED_REPORT_SERVER_STOPPED = """\
starting benchmark...
spawning thread #0: 1 total client(s). 60 total requests
Application protocol: h2c
progress: 30% done

finished in 978.37ms, 20.44 req/s, 16.32KB/s
requests: 60 total, 20 started, 20 done, 20 succeeded, 40 failed, 40 errored, 0 timeout
status codes: 20 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 15.97KB (16352) total, 135B (135) headers (space savings 91.67%), 14.61KB (14960) data
"""


# -- framing ----------------------------------------------------------------------------------------
@given(user=st.text(min_size=1, max_size=128), k=st.integers(0, 200))
def test_request_body_is_one_uncompressed_length_prefixed_request(user: str, k: int) -> None:
    body = request_body(user, k)
    assert body[0] == 0  # not compressed
    assert int.from_bytes(body[1:5], "big") == len(body) - 5
    request = pb.RecommendRequest.FromString(grpc_unframe(body))
    assert (request.user_id, request.k) == (user, k)


@given(st.binary(max_size=70_000))
def test_frame_and_unframe_are_inverse(message: bytes) -> None:
    assert grpc_unframe(grpc_frame(message)) == message
    assert len(grpc_frame(message)) == len(message) + 5


def test_unframe_refuses_compressed_or_truncated_bodies() -> None:
    body = request_body("42", 10)
    with pytest.raises(ValueError, match="uncompressed"):
        grpc_unframe(b"\x01" + body[1:])
    with pytest.raises(ValueError, match="length prefix"):
        grpc_unframe(body[:-1])
    with pytest.raises(ValueError):
        grpc_unframe(b"\x00\x00")


def test_body_users_are_distinct_seeded_and_keep_the_unknown_share() -> None:
    known = [str(n) for n in range(100)]
    users = body_users(known, 10, unknown_share=0.1, seed=3)
    assert users == body_users(known, 10, unknown_share=0.1, seed=3)
    assert len(set(users)) == 10
    assert sum(u.startswith("bench-new-") for u in users) == 1
    assert set(users) - {u for u in users if u.startswith("bench-new-")} <= set(known)
    assert body_users(known, 10, unknown_share=0.1, seed=4) != users


# -- h2load's output ----------------------------------------------------------------------------
def test_parse_log_reads_the_captured_log() -> None:
    rows = parse_log(CAPTURED_LOG)
    assert len(rows) == 10
    assert rows[0] == LogRow(start_us=1796286890818351, status=200, elapsed_us=1149)
    assert all(r.status == 200 for r in rows)
    # --rps 20: one request every 50 ms, as scheduled
    gaps = [(b.start_us - a.start_us) / 1000 for a, b in itertools.pairwise(rows)]
    assert min(gaps) > 40 and max(gaps) < 60


def test_parse_log_reads_failed_streams_and_ignores_later_columns() -> None:
    rows = parse_log("1\t-1\t20\n\n2\t200\t30\textra\n")
    assert rows == [LogRow(1, -1, 20), LogRow(2, 200, 30)]
    with pytest.raises(ValueError, match="line 2"):
        parse_log("1\t200\t5\n1\t200\n")


def test_parse_summary_reads_the_captured_reports() -> None:
    assert parse_summary(CAPTURED_REPORT) == Summary(
        total=10,
        started=10,
        done=10,
        succeeded=10,
        failed=0,
        errored=0,
        timeout=0,
        status_2xx=10,
        data_bytes=7480,
    )
    stopped = parse_summary(CAPTURED_REPORT_SERVER_STOPPED)
    assert (stopped.total, stopped.started, stopped.succeeded) == (60, 20, 20)
    assert (stopped.failed, stopped.errored, stopped.data_bytes) == (40, 40, 14960)
    with pytest.raises(ValueError, match="no h2load report"):
        parse_summary("starting benchmark...\n")


# -- the plan -------------------------------------------------------------------------------------
@given(
    rate=st.integers(1, 2000),
    seconds=st.floats(0.5, 30),
    bodies=st.integers(1, 16),
    connections=st.integers(1, 32),
    deadline_s=st.floats(0.05, 5),
)
def test_plan_is_one_evenly_spaced_schedule_that_never_holds_a_request_back(
    rate: int, seconds: float, bodies: int, connections: int, deadline_s: float
) -> None:
    plans = plan_processes(rate, seconds, bodies, connections, deadline_s)
    total = max(1, round(rate * seconds))
    assert sum(p.requests for p in plans) == total
    assert len(plans) == min(max(bodies, connections), total)
    assert max(p.requests for p in plans) - min(p.requests for p in plans) <= 1
    # Together the processes send one request every 1 / rate, no two at once.
    due = sorted(t for p in plans for t in p.offsets_s)
    assert due == pytest.approx([n / rate for n in range(total)])
    for index, p in enumerate(plans):
        assert p.body == index % bodies
        if p.requests > 1:  # --rps: its turns come every len(plans) / rate
            assert p.rps * len(plans) == pytest.approx(rate)
        # in flight while answers take up to the deadline: never above -m
        assert p.max_streams >= rate / len(plans) * deadline_s


def test_h2load_argv_posts_grpc_with_the_deadline_on_one_connection() -> None:
    plan = plan_processes(200, 10, 8, 8, 1.0)[0]
    url = "http://h:1/aetherrec.v1.Recommender/Recommend"
    argv = h2load_argv("h2load", url, plan, Path("b"), Path("l"), 1.0)
    headers = [argv[i + 1] for i, a in enumerate(argv) if a == "-H"]
    assert headers == [*GRPC_HEADERS, "grpc-timeout: 1000m"]
    assert argv[1] == url
    assert argv[argv.index("-d") + 1] == "b" and argv[argv.index("--log-file") + 1] == "l"
    assert argv[argv.index("--rps") + 1] == "25"
    assert argv[argv.index("-n") + 1] == "250" and argv[argv.index("-c") + 1] == "1"


def test_send_lags_pair_each_process_row_with_its_turn_in_send_order() -> None:
    plan = plan_processes(10, 1, 2, 2, 1.0)[1]  # due at 0.1, 0.3, 0.5, 0.7, 0.9 s
    start_us = 1_000_000
    sent = [start_us + round(t * 1e6) + 2_000 for t in plan.offsets_s]  # each 2 ms late
    rows = [LogRow(s, 200, 500) for s in reversed(sent)]  # the log is in completion order
    assert send_lags_ms(plan, rows, start_us) == pytest.approx([2.0] * 5)


# -- the figures of a rate ------------------------------------------------------------------------
def _result(rows: list[LogRow], requests: int, rate: float = 10.0) -> H2loadResult:
    plans = plan_processes(rate, requests / rate, 2, 2, 1.0)
    ok = sum(200 <= r.status < 300 for r in rows)
    summary = Summary(requests, requests, requests, ok, requests - ok, requests - ok, 0, ok, 0)
    return H2loadResult(rate, plans, [summary], rows, cpu_s=0.002)


def test_window_is_at_least_the_schedule_and_latency_counts_http_answers() -> None:
    rows = [LogRow(1_000_000 + n * 100_000, 200, 2_000 + n) for n in range(9)]
    rows.append(LogRow(1_900_000, -1, 50_000))
    result = _result(rows, 10)
    assert result.window_s == pytest.approx(1.0)  # 10 requests at 10 rps; sent over 0.9 s
    assert result.percentile_ms(50) == pytest.approx(2.004)
    late = _result([LogRow(0, 200, 3_000_000)], 10)
    assert late.window_s == pytest.approx(3.0)


def test_h2load_figures_count_ok_answers_on_the_server_less_the_sampled_clients() -> None:
    rows = [LogRow(n * 100_000, 200, 4_000) for n in range(20)]
    sampled = LoadResult(offered_rps=2.0, sent=4, latencies_ms=[5.0] * 3)
    sampled.codes.update({"OK": 3, "DEADLINE_EXCEEDED": 1})
    ok_key = PIPELINE.ok
    refused = 'aether_recommend_requests_total{status="RESOURCE_EXHAUSTED"}'
    before = {ok_key: 100.0, PIPELINE.answered: 100.0, refused: 1.0}
    after = {ok_key: 100.0 + 18 + 3, PIPELINE.answered: 121.0, refused: 3.0}
    after['aether_recommend_slate_items_total{source="ann"}'] = 210.0
    after['aether_recommend_fallbacks_total{reason="source_failed:ann"}'] = 2.0
    load = _result(rows, 20)
    load.send_lags_ms = [1.0] * 19 + [3.0]
    figures = h2load_rate_figures(
        10, H2loadRate(load, sampled), before, after, (0.021, 0.0), PIPELINE
    )
    s = "_at_10rps"
    assert figures[f"send_lag_p50_ms{s}"] == 1.0 and figures[f"send_lag_p99_ms{s}"] == 2.62
    assert figures[f"requests{s}"] == 20 and figures[f"h2load_answered{s}"] == 20
    assert figures[f"grpc_ok{s}"] == 18 and figures[f"errors{s}"] == 2
    assert figures[f"errors_RESOURCE_EXHAUSTED{s}"] == 2
    assert figures[f"achieved_rps{s}"] == 9.0  # 18 OK over the 2 s schedule
    assert figures[f"sampled_requests{s}"] == 4 and figures[f"sampled_errors{s}"] == 1
    assert figures[f"p99_ms{s}"] == 4.0
    assert figures[f"server_cpu_ms_per_request{s}"] == 1.0  # 21 ms over 21 pipeline runs
    assert figures[f"fallback_steps_source_failed_ann{s}"] == 2
    assert figures[f"slate_items_per_answer{s}"] == 10.0
    assert within_target([10], figures) == [] and within_target([9], {}) == []


def test_floor_figures_divide_by_the_floors_answers() -> None:
    rows = [LogRow(n * 50_000, 200, 300) for n in range(40)]
    before = {FLOOR.answered: 10.0}
    after = {FLOOR.answered: 10.0 + 40 + 5}
    sampled = LoadResult(offered_rps=5.0, sent=5)
    sampled.codes["OK"] = 5
    figures = h2load_rate_figures(
        20, H2loadRate(_result(rows, 40, rate=20), sampled), before, after, (0.009, 0.0), FLOOR
    )
    s = "_at_20rps"
    assert figures[f"grpc_ok{s}"] == 40 and figures[f"errors{s}"] == 0
    assert figures[f"server_cpu_ms_per_request{s}"] == 0.2
    assert within_target([20], figures) == [20]
