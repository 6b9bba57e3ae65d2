#!/usr/bin/env python3
"""A small WebUI to try the rerank server by hand. It only talks HTTP to the server.

    python webui.py --server-url http://127.0.0.1:8000 [--host 127.0.0.1] [--port 7860] [--api-key KEY]

Also configurable as RERANK_SERVER_URL and RERANK_API_KEY.
"""

from __future__ import annotations

import argparse
import html
import os
import signal
from typing import Any

import httpx

TIMEOUT_S = 120.0
STATUS_TIMEOUT_S = 3.0  # the status line never waits long for a server that does not answer
STATUS_REFRESH_S = 5.0
COLUMNS = ["rank", "index", "score", "document", "best passage"]
# rank, index and score at their natural width; the text columns share the rest (all of it fits
# the results column at 1400 px: no horizontal scrolling)
COLUMN_WIDTHS = ["8%", "8%", "10%", "37%", "37%"]
STRATEGIES = ["truncate", "chunk"]
DOCUMENT_CHARS = 160  # a document in the table: its first characters, then its length
PASSAGE_CHARS = 200  # the best passage in the table: its first characters
CHART_LABEL_CHARS = 24
EXAMPLES = [
    [
        "What is the capital of China?",
        "The capital of China is Beijing.\n"
        "Gravity is a force that attracts two bodies towards each other.\n"
        "Shanghai is the largest city in China.\n"
        "Beijing has been the political centre of China for centuries.",
        "",
        3,
    ],
    [
        "中国的首都是哪里？",
        "北京是中华人民共和国的首都。\n上海是中国最大的城市。\n"
        "长城是中国古代的军事防御工程。\nParis is the capital of France.",
        "",
        0,
    ],
    [
        "¿Cómo funciona la fotosíntesis?",
        "La fotosíntesis convierte la luz en energía química.\n"
        "Photosynthesis converts light energy into chemical energy in plants.\n"
        "Die Photosynthese findet in den Chloroplasten statt.\n"
        "El fútbol es el deporte más popular de España.",
        "Given a question, retrieve passages in any language that answer it",
        0,
    ],
]


class RerankClient:
    """The few HTTP calls the WebUI makes; every failure becomes a message for the page."""

    def __init__(self, server_url: str, api_key: str | None = None, timeout: float = TIMEOUT_S) -> None:
        self.server_url = server_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = timeout

    def _request(self, method: str, path: str, timeout: float | None = None, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method, self.server_url + path, headers=self.headers, timeout=timeout or self.timeout, **kwargs
        )

    def status(self) -> str:
        """A one-line state of the server: ready with its model, loading, or unreachable (asked
        anew on every page load and every few seconds, with a short time-out)."""
        try:
            ready = self._request("GET", "/ready", timeout=STATUS_TIMEOUT_S)
        except httpx.TransportError as exc:
            return f"🔴 Server unreachable at {self.server_url} ({type(exc).__name__})"
        if ready.status_code != 200:
            return f"🟡 Server at {self.server_url} is starting: {error_message(ready)}"
        return f"🟢 Ready: model **{ready.json().get('model', '?')}** at {self.server_url}"

    def models(self) -> list[str]:
        """The server's models, the default first (none if it cannot be asked)."""
        try:
            response = self._request("GET", "/v1/models", timeout=STATUS_TIMEOUT_S)
            return [card["id"] for card in response.json()["data"]] if response.status_code == 200 else []
        except (httpx.TransportError, ValueError, KeyError, TypeError):
            return []

    def rerank(
        self,
        query: str,
        documents_text: str,
        instruction: str = "",
        top_n: float | int | None = 0,
        strategy: str = "truncate",
        model: str | None = None,
    ) -> tuple[list[list[Any]], str]:
        """Rows of (rank, original index, score, document, best passage, where the passage lies)
        and a status message; documents whole (the page shortens them: `table_rows`).

        With strategy "chunk" a long document is scored as windows; its row quotes the window
        that won and gives its offsets (empty and None for documents of one window)."""
        documents = [line.strip() for line in documents_text.splitlines() if line.strip()]
        if not query.strip():
            return [], "⚠️ Enter a query."
        if not documents:
            return [], "⚠️ Enter at least one document, one per line."
        body: dict[str, Any] = {"query": query, "documents": documents}
        if instruction.strip():
            body["instruction"] = instruction.strip()
        if top_n:
            body["top_n"] = int(top_n)
        if strategy != "truncate":
            body["long_document_strategy"] = strategy
        if model:
            body["model"] = model
        try:
            response = self._request("POST", "/v1/rerank", json=body)
        except httpx.TransportError as exc:
            return [], f"❌ Server unreachable at {self.server_url} ({type(exc).__name__}). Is it running?"
        if response.status_code != 200:
            return [], f"❌ The server answered {response.status_code}: {error_message(response)}"
        data = response.json()
        rows = []
        for rank, r in enumerate(data["results"], start=1):
            document = documents[r["index"]]
            where = passage(document, r)
            rows.append([rank, r["index"], round(r["relevance_score"], 4), document, passage_label(where), where])
        usage = data.get("usage", {})
        tokens = usage.get("prompt_tokens", "?")
        return rows, f"✅ Ranked {len(documents)} documents with **{data.get('model', '?')}** ({tokens} tokens)."


def passage(document: str, result: dict[str, Any]) -> dict[str, Any] | None:
    """Where the winning window of a chunked document lies, and its text (None: one window)."""
    where = result.get("passage")
    if not where:
        return None
    return {**where, "text": document[where["start"] : where["end"]]}


def shorten(text: str, limit: int) -> str:
    """The first `limit` characters of a text, and its length if it was cut."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return f"{text[:limit].rstrip()}… ({len(text):,} characters)"


def passage_label(where: dict[str, Any] | None) -> str:
    """`window k of n: «first words…»` for the table."""
    if not where:
        return ""
    text = where["text"].strip()
    if len(text) > PASSAGE_CHARS:
        text = text[:PASSAGE_CHARS].rstrip() + "…"
    return f"window {where['chunk'] + 1} of {where['chunks']}: «{text}»"


def table_rows(rows: list[list[Any]]) -> list[list[Any]]:
    """The rows as the table shows them: documents and passages shortened to a line or two."""
    return [[rank, index, score, shorten(doc, DOCUMENT_CHARS), label] for rank, index, score, doc, label, _ in rows]


def document_view(row: list[Any]) -> str:
    """One ranked document in full (HTML), its best passage marked, for the row a person selects."""
    rank, index, score, document, _, where = row
    head = f"<h3>#{rank}: document {index}, score {score} ({len(document):,} characters)</h3>"
    if not where:
        return f"{head}<div class='document'>{html.escape(document)}</div>"
    start, end = where["start"], where["end"]
    note = f"<p>Best passage: window {where['chunk'] + 1} of {where['chunks']}, characters {start:,}-{end:,}</p>"
    body = (
        html.escape(document[:start])
        + f"<mark class='best-passage'>{html.escape(document[start:end])}</mark>"
        + html.escape(document[end:])
    )
    return f"{head}{note}<div class='document'>{body}</div>"


def error_message(response: httpx.Response) -> str:
    try:
        return response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return response.text[:300] or response.reason_phrase


CSS = """
#document-view .document { white-space: pre-wrap; max-height: 420px; overflow-y: auto; }
#document-view mark { background: #ffe08a; }
"""


def build_ui(client: RerankClient):
    import gradio as gr
    import pandas as pd

    def on_submit(query: str, documents: str, instruction: str, top_n: float, strategy: str, model: str | None):
        rows, message = client.rerank(query, documents, instruction, top_n, strategy, model)
        table = pd.DataFrame(table_rows(rows), columns=COLUMNS)
        labels = [f"#{r[0]} {shorten(r[3], CHART_LABEL_CHARS).split('… (')[0]}" for r in rows]
        chart = pd.DataFrame({"document": labels, "score": [r[2] for r in rows]})
        hint = "Select a row to read its document in full." if rows else ""
        return table, chart, message, client.status(), rows, hint

    def on_load():
        names = client.models()
        return client.status(), gr.Dropdown(choices=names, value=names[0] if names else None)

    def on_select(rows: list[list[Any]], evt: gr.SelectData) -> str:
        row = evt.index[0] if isinstance(evt.index, list | tuple) else evt.index
        return document_view(rows[row]) if rows and 0 <= row < len(rows) else ""

    # Gradio finds the event by the parameter's annotation, a string under `from __future__ import
    # annotations` that it cannot resolve here (gradio is imported in this function): give it the class.
    on_select.__annotations__["evt"] = gr.SelectData

    with gr.Blocks(title="Qwen3 Reranker") as demo:
        gr.Markdown("# Qwen3 Reranker\nRank documents by relevance to a query with the rerank server.")
        status = gr.Markdown("Asking the server…", elem_id="status")
        results = gr.State([])
        with gr.Row():
            with gr.Column(scale=1):
                query = gr.Textbox(label="Query", placeholder="What is the capital of China?")
                documents = gr.Textbox(label="Documents (one per line)", lines=8)
                instruction = gr.Textbox(label="Instruction (optional)", placeholder="default: web search")
                with gr.Row():  # one row: the form stays as short as it was with one model
                    model = gr.Dropdown(label="Model (the default first)", choices=[], elem_id="model")
                    top_n = gr.Number(label="Top N (0 = all)", value=0, precision=0, minimum=0)
                strategy = gr.Radio(
                    STRATEGIES,
                    value="truncate",
                    label="Long documents",
                    info="truncate: past the model's length a document loses its tail; "
                    "chunk: score it as overlapping windows, keep the best, and show that passage",
                )
                submit = gr.Button("Rerank", variant="primary")
            with gr.Column(scale=2):
                message = gr.Markdown()
                table = gr.Dataframe(
                    headers=COLUMNS,
                    label="Ranking",
                    wrap=True,
                    column_widths=COLUMN_WIDTHS,
                    interactive=False,
                    elem_id="ranking",
                )
                hint = gr.Markdown()
                detail = gr.HTML(elem_id="document-view")
                chart = gr.BarPlot(x="document", y="score", label="Relevance scores", y_lim=[0, 1], sort="-y")
        gr.Examples(EXAMPLES, inputs=[query, documents, instruction, top_n])
        inputs = [query, documents, instruction, top_n, strategy, model]
        outputs = [table, chart, message, status, results, hint]
        submit.click(on_submit, inputs, outputs).then(lambda: "", None, detail)
        query.submit(on_submit, inputs, outputs).then(lambda: "", None, detail)
        table.select(on_select, results, detail)
        # The status line: asked on every page load and every few seconds, never blocking the page.
        demo.load(on_load, None, [status, model], show_progress="hidden")
        gr.Timer(STATUS_REFRESH_S).tick(client.status, None, status, show_progress="hidden")
    return demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="WebUI for the Qwen3 rerank server")
    parser.add_argument("--server-url", default=os.environ.get("RERANK_SERVER_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 in Docker)")
    parser.add_argument("--port", type=int, default=7860)
    default_key = (os.environ.get("RERANK_API_KEY") or "").split(",")[0] or None  # the server may list several
    parser.add_argument("--api-key", default=default_key, help="the server's API key")
    args = parser.parse_args(argv)
    client = RerankClient(args.server_url, args.api_key)
    # SIGTERM (docker stop) as Ctrl-C: Gradio then closes its server and the process exits 0. As a
    # container's PID 1 the process would otherwise ignore it and be killed at the stop's time-out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    build_ui(client).launch(server_name=args.host, server_port=args.port, show_error=True, css=CSS)


if __name__ == "__main__":
    main()
