"""Checks a running `tuner serve --model M` with the official `openai` client.

Not part of `cargo test` (it needs Python and the `openai` package):

    pip install openai
    tuner serve --model ./my-model &
    python tests/openai_client_check.py http://127.0.0.1:8000/v1 ./my-model [TOKEN]
"""

import sys

from openai import OpenAI


def main() -> None:
    base_url, model = sys.argv[1], sys.argv[2]
    client = OpenAI(base_url=base_url, api_key=sys.argv[3] if len(sys.argv) > 3 else "none")
    ids = [m.id for m in client.models.list().data]
    assert model in ids, ids

    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Say hi"}],
        max_tokens=16,
        temperature=0,
    )
    text = r.choices[0].message.content
    assert r.usage.prompt_tokens + r.usage.completion_tokens == r.usage.total_tokens
    print("chat:", repr(text), r.choices[0].finish_reason)

    streamed = ""
    for chunk in client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Say hi"}],
        max_tokens=16,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    ):
        for c in chunk.choices:
            streamed += c.delta.content or ""
    assert streamed == text, (streamed, text)
    print("stream: same text")

    c = client.completions.create(model=model, prompt="Once upon a time", max_tokens=8, logprobs=2)
    print("completion:", repr(c.choices[0].text), len(c.choices[0].logprobs.tokens), "tokens")

    try:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
        raise SystemExit("expected a 404")
    except Exception as e:  # openai.NotFoundError
        assert getattr(e, "status_code", None) == 404, e
    print("ok")


if __name__ == "__main__":
    main()
