"""The benchmark's workload and its template for vLLM's server (no engine, no server).

The side-by-side comparison is only fair if both servers score the same prompts on the workload
the issue asks for; `bench.py compare` also checks equal scores at run time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jinja2.sandbox import ImmutableSandboxedEnvironment

from rerank_bench import load, servers, workloads
from server.rerank.prompt import PromptBuilder

from .conftest import MAX_MODEL_LEN


def test_workload_is_seeded() -> None:
    assert workloads.Workload.make(5, seed=3).requests == workloads.Workload.make(5, seed=3).requests
    assert workloads.Workload.make(5, seed=3).requests != workloads.Workload.make(5, seed=4).requests


def test_workload_lengths_in_tokens(qwen3_tokenizer: Any) -> None:
    """Queries of 10-30 tokens, documents of 100-500 tokens, 20-100 documents a request."""
    tokenizer = qwen3_tokenizer
    workload = workloads.Workload.make(40, seed=1)
    doc_counts, doc_lengths, query_lengths = [], [], []
    for request in workload.requests:
        query_lengths.append(len(tokenizer.encode(request["query"], add_special_tokens=False)))
        doc_counts.append(len(request["documents"]))
        # As the prompt tokenizes a document: after "<Document>:", with its leading space.
        encoded = tokenizer([" " + d for d in request["documents"]], add_special_tokens=False)["input_ids"]
        doc_lengths += [len(ids) for ids in encoded]
        assert [len(ids) for ids in encoded] == [len(d.split()) for d in request["documents"]]
    assert 10 <= min(query_lengths) and max(query_lengths) <= 30
    assert 100 <= min(doc_lengths) and max(doc_lengths) <= 500
    assert 20 <= min(doc_counts) and max(doc_counts) <= 100
    # Spread over the ranges, not bunched at one end.
    assert max(doc_lengths) - min(doc_lengths) > 300 and max(doc_counts) - min(doc_counts) > 50


def test_vllm_template_renders_the_card_prompt(qwen3_tokenizer: Any) -> None:
    """vLLM's server, given bench.py's chat template, sees the same token ids as this server."""
    tokenizer = qwen3_tokenizer
    # Rendered as transformers renders chat templates.
    template = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(
        servers.QWEN3_RERANKER_TEMPLATE
    )
    builder = PromptBuilder(tokenizer, MAX_MODEL_LEN)
    request = workloads.Workload.make(1, seed=2, docs=(3, 3), doc_tokens=(20, 40)).requests[0]
    ours = builder.build(request["query"], request["documents"]).token_ids
    for document, ids in zip(request["documents"], ours, strict=True):
        text = template.render(
            messages=[{"role": "query", "content": request["query"]}, {"role": "document", "content": document}]
        )
        assert tokenizer.encode(text, add_special_tokens=False) == ids


def test_cpu_is_counted_by_process_kind() -> None:
    """bench.py's CPU per document by kind: both servers' titles, one or several API processes."""
    assert load.process_kind("VLLM::EngineCore", False, False) == "engine_core"
    assert load.process_kind("VLLM::Worker-0", False, False) == "worker"
    assert load.process_kind("rerank::api-1", False, True) == "api"
    assert load.process_kind("VLLM::APIServer_0", False, True) == "api"
    # The process started: the HTTP process itself, or the supervisor of several.
    assert load.process_kind("python -m server", True, False) == "api"
    assert load.process_kind("python -m server", True, True) == "supervisor"


def test_soak_judges_growth_over_the_window_and_every_failure() -> None:
    """bench.py soak's verdict (scripts/rerank_bench/soak.py), on made-up samples: flat passes;
    RSS or FDs growing 5% or more over the window fails (not before it: warm-up); a 5xx, a lost
    answer or a wrong one fails; 429s and hang-ups do not."""
    from rerank_bench.soak import Sample, Soak, summarize

    def soak_with(rss: Callable[[float], float], fds: Callable[[float], float] = lambda t: 40) -> Soak:
        soak = Soak("http://x", 1, seconds=1200, burst_size=8, burst_docs=64)
        soak.samples = [
            Sample(t, {"api-0": {"rss_mib": rss(t), "fds": fds(t), "threads": 12}}) for t in range(0, 1201, 5)
        ]
        soak.outcomes.update({("search", "200"): 100, ("burst", "429"): 5, ("hang-up", "hung-up"): 3})
        return soak

    warm_then_flat = soak_with(lambda t: 500 + min(t, 300))  # grows while warming up, then flat
    summary = summarize(warm_then_flat, window_s=900, max_growth=0.05)
    assert summary["passed"] and summary["server_errors"] == 0 and not summary["grown"]
    assert abs(summary["processes"]["api-0"]["rss_mib_growth"]) < 1e-9

    # Open FDs swing with the client connections of the moment (43-54 in a real run): no trend, no leak.
    swinging = summarize(soak_with(lambda t: 800, lambda t: 43 + (t * 7919) % 12), window_s=900, max_growth=0.05)
    assert swinging["passed"], swinging["processes"]

    leaking = summarize(soak_with(lambda t: 800 + t * 0.06), window_s=900, max_growth=0.05)  # +54 MiB in 15 min
    assert not leaking["passed"] and set(leaking["grown"]["api-0"]) == {"rss_mib_growth"}
    fd_leak = summarize(soak_with(lambda t: 800, lambda t: 40 + t // 100), window_s=900, max_growth=0.05)
    assert not fd_leak["passed"] and set(fd_leak["grown"]["api-0"]) == {"fds_growth"}

    for outcome in ("500", "lost", "wrong"):
        failing = soak_with(lambda t: 800)
        failing.outcomes[("tei", outcome)] += 1
        assert not summarize(failing, window_s=900, max_growth=0.05)["passed"], outcome


def test_the_peers_report_pairs_each_rounds_servers(tmp_path) -> None:
    import argparse

    from rerank_bench.peers import PeerRun
    from rerank_bench.report import peers_report

    def run(server: str, round_: int, rps: float, p50: float) -> PeerRun:
        return PeerRun("vllm-bench", server, round_, rps, rps * 16, p50, 2 * p50, 0, "cmd", {"api": 1.0})

    runs = [run("vllm", 1, 10, 100), run("ours", 1, 12, 80), run("vllm", 2, 10, 100), run("ours", 2, 9, 110)]
    runs.append(PeerRun("aiperf-tei", "ours", 1, 5.0, 80.0, 50, 90, 0, "cmd"))
    runs.append(run("passive", 2, 15, 50))  # a variant of ours, paired with vLLM's run of its round
    summary = peers_report(runs, argparse.Namespace(json=str(tmp_path / "peers.json")))
    bench = summary["tools"]["vllm-bench"]
    assert bench["requests_per_s_ratio"] == [1.2, 0.9] and bench["lowest"] == 0.9 and bench["p50_ratio"] == [0.8, 1.1]
    assert summary["tools"]["aiperf-tei"] == {"ours_requests_per_s": [5.0]}  # no vLLM side: ours alone
    assert summary["tools"]["vllm-bench passive"]["requests_per_s_ratio"] == [1.5]
    assert summary["tools"]["vllm-bench passive"]["p50_ratio"] == [0.5]
    assert (tmp_path / "peers.json").exists()


def test_a_profile_is_summed_per_innermost_process(tmp_path) -> None:
    from rerank_bench.peers import summarize_profile

    raw = tmp_path / "ours.raw.txt"
    raw.write_text(
        'process 1:"python -m server";encode (tiktoken/core.py:127) 30\n'
        'process 1:"python -m server";process 2:"VLLM::EngineCore";sched_yield (vllm/distributed/utils.py:46) 60\n'
        'process 1:"python -m server";select (selectors.py:468) 10\n'
        "\n"
    )
    summary = summarize_profile(raw)
    assert summary.splitlines()[0] == 'process 2:"VLLM::EngineCore": 60 samples'
    assert "   75.0%  encode (tiktoken/core.py:127)" in summary.splitlines()


def test_vllm_bench_is_rerun_as_its_console_script_against_each_servers_path(tmp_path) -> None:
    import argparse

    from rerank_bench.peers import printable, vllm_bench_command

    args = argparse.Namespace(model="models/tiny", doc_tokens=128, docs=16, requests=10, concurrency=4)
    printed = printable(vllm_bench_command("http://127.0.0.1:7997", "/rerank", args, 7, tmp_path / "out.json"))
    assert printed.startswith(
        "vllm bench serve --backend vllm-rerank --base-url http://127.0.0.1:7997 --endpoint /rerank "
    )  # Infinity's path; ours and vLLM's /v1/rerank
    assert "--random-batch-size 16 --num-prompts 160 --max-concurrency 4 --seed 7" in printed


def test_the_curves_grid_keeps_shapes_within_the_request_size_and_adds_the_extra_ones() -> None:
    from rerank_bench.curves import Shape, shapes

    todo = shapes("1,16,1000", "64,2048", max_request_tokens=65536, extra="1x128,16x2048")
    assert [s.label for s in todo] == ["1x64", "16x64", "1000x64", "1x128", "1x2048", "16x2048"]
    assert Shape(16, 2048).doc_tokens == 1024  # random-rerank: a document is half of the input length
    assert "1000x2048" not in {s.label for s in todo}  # 1,000 documents of 1,024 tokens: over 65,536


def test_a_curve_run_is_sized_by_document_tokens_within_its_bounds() -> None:
    import argparse

    from rerank_bench.curves import Shape, requests_for

    args = argparse.Namespace(doc_tokens_per_run=100_000, min_requests=8, max_requests=300)
    assert requests_for(Shape(1, 128), args) == 300  # 1,562 wanted: at most 300
    assert requests_for(Shape(16, 128), args) == 97  # 100,000 // (16 x 64)
    assert requests_for(Shape(1000, 64), args) == 8  # 3 wanted: at least 8


def test_the_curves_summary_pairs_each_round_with_vllm_and_the_engine_alone() -> None:
    from rerank_bench.curves import ALONE, Point, Shape, markdown, summarize

    def point(server: str, round_: int, rps: float) -> Point:
        cpu = {"api": 1.0, "client": 9.0} if server != ALONE else None
        return Point(server, "4x64", round_, rps, 4 * rps, 10.0, 20.0, cpu)

    points = [point("vllm", 1, 10), point("ours", 1, 20), point(ALONE, 1, 40)]
    points += [point("vllm", 2, 20), point("ours", 2, 30), point(ALONE, 2, 30)]
    summary = summarize(points, [Shape(4, 64)])["4x64"]
    assert summary["ours"]["ratio_to_vllm_rounds"] == [2.0, 1.5] and summary["ours"]["ratio_to_vllm"] == 1.75
    assert summary["ours"]["fraction_of_engine_alone_rounds"] == [0.5, 1.0]
    assert summary["ours"]["docs_per_s"] == 100.0 and summary["ours"]["cpu_ms_per_request"]["api"] == 1.0
    assert "ratio_to_vllm" not in summary["vllm"] and "fraction_of_engine_alone" not in summary[ALONE]
    row = markdown({"4x64": summary}, [Shape(4, 64)]).splitlines()[-1]
    assert row == "| 4 x 64 | 100, 60, -, 140 | **1.75x** (2.00, 1.50) | 0.75 | 10, 10 | 20, 20 | 1.0 |"
