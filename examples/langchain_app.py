"""The same app on LangChain: each request goes through `langchain-openai`'s ChatOpenAI for the
model the flag names, and OpenTelemetry's official OpenAI instrumentation, which sees the OpenAI
client LangChain calls underneath, reports the GenAI metrics canaryctl's `otel-genai` profile
reads. Arguments as examples/openai_otel_app.py's:

    python examples/langchain_app.py --flags flags.json --flag support-bot-model \\
        --model gpt-4o-mini=http://127.0.0.1:8101/v1 \\
        --model mixtral-8x7b=http://127.0.0.1:8102/v1 --metrics-port 9464 --rate 30
"""

from __future__ import annotations

from langchain_openai import ChatOpenAI
from openai_otel_app import Call, main
from pydantic import SecretStr


def langchain_calls(endpoints: dict[str, str], key: str) -> Call:
    chats = {
        name: ChatOpenAI(
            model=name, base_url=url, api_key=SecretStr(key), max_retries=0, timeout=10
        )
        for name, url in endpoints.items()
    }

    def call(model: str, question: str, user: str) -> None:
        chats[model].invoke(question, user=user)

    return call


if __name__ == "__main__":
    main(langchain_calls, __doc__)
