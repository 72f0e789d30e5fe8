"""Render tool conversations with HF transformers' apply_chat_template, the reference for
r1-server's tests/tool_templates.rs (which renders the same conversations with r1serve's
minijinja set-up and compares byte for byte).

Usage (the torch venv of scripts/ has transformers):
    ~/.cache/r1serve/venv-ref/bin/python crates/r1-server/tests/data/make_tool_templates.py \
        $R1SERVE_FIXTURES > crates/r1-server/tests/data/tool-templates.json

Each case holds the messages as an OpenAI client sends them (`function.arguments` a JSON
string) and, in `hf_messages`, as they are handed to the template: parsed into an object, as
vLLM does, for templates that apply `tojson` to them (Qwen2.5), and left a string for
templates that add them to a string (DeepSeek-R1).
"""
import copy
import json
import sys

import jinja2
import transformers
from transformers import AutoTokenizer
from transformers.utils.chat_template_utils import _compile_jinja_template

fixtures = sys.argv[1] if len(sys.argv) > 1 else "../shared/fixtures"
qwen = AutoTokenizer.from_pretrained(f"{fixtures}/qwen05-tokenizer")
r1_src = open(f"{fixtures}/templates/deepseek-r1-distill.jinja").read()
R1_BOS = "<｜begin▁of▁sentence｜>"
R1_EOS = "<｜end▁of▁sentence｜>"

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "The city, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The local time in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def call(id_, name, args):
    return {"id": id_, "type": "function",
            "function": {"name": name, "arguments": json.dumps(args)}}


CONVERSATIONS = {
    "tools_only": [
        {"role": "user", "content": "What's the weather in Paris?"},
    ],
    "system_and_tools": [
        {"role": "system", "content": "You are a weather bot."},
        {"role": "user", "content": "Weather in Paris?"},
    ],
    "round_trip": [
        {"role": "user", "content": "What's the weather in Paris?"},
        {"role": "assistant", "content": None,
         "tool_calls": [call("call_1", "get_weather", {"city": "Paris", "unit": "celsius"})]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"temperature\": 21}"},
    ],
    "parallel_round_trip": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather and time in Tokyo?"},
        {"role": "assistant", "content": None,
         "tool_calls": [call("call_a", "get_weather", {"city": "Tokyo"}),
                        call("call_b", "get_time", {"city": "Tokyo"})]},
        {"role": "tool", "tool_call_id": "call_a", "content": "10 degrees"},
        {"role": "tool", "tool_call_id": "call_b", "content": "09:30"},
        {"role": "assistant", "content": "It is 10 degrees and 09:30 in Tokyo."},
        {"role": "user", "content": "Thanks!"},
    ],
}


def hf_form(messages, parse_args):
    out = copy.deepcopy(messages)
    for m in out:
        for c in m.get("tool_calls") or []:
            if parse_args:
                c["function"]["arguments"] = json.loads(c["function"]["arguments"])
    return out


cases = []
for name, msgs in CONVERSATIONS.items():
    for tmpl in ("qwen05", "deepseek-r1-distill"):
        parse_args = tmpl == "qwen05"
        hf_msgs = hf_form(msgs, parse_args)
        kwargs = {}
        if tmpl == "deepseek-r1-distill":
            kwargs = {"bos_token": R1_BOS, "eos_token": R1_EOS}
            # apply_chat_template (5.x) drops keys whose value is None before rendering; R1's
            # template then takes the missing `content` of an assistant tool-call message for
            # text and fails ('dict object' has no attribute 'content'). It was written for
            # `content: None`, which vLLM passes: render it with HF's own compiled template
            # (same environment: trim_blocks, lstrip_blocks, tojson, raise_exception) and the
            # messages as they are.
            rendered = _compile_jinja_template(r1_src).render(
                messages=hf_msgs, tools=[WEATHER, TIME], documents=None,
                add_generation_prompt=True, **kwargs)
        else:
            rendered = qwen.apply_chat_template(
                hf_msgs, tools=[WEATHER, TIME], add_generation_prompt=True, tokenize=False
            )
        cases.append({
            "name": f"{tmpl}/{name}",
            "template": tmpl,
            "bos_token": R1_BOS if kwargs else qwen.bos_token,
            "eos_token": R1_EOS if kwargs else qwen.eos_token,
            "tools": [WEATHER, TIME],
            "messages": msgs,
            "hf_messages": hf_msgs,
            "add_generation_prompt": True,
            "rendered": rendered,
        })

json.dump({
    "provenance": {
        "script": "crates/r1-server/tests/data/make_tool_templates.py",
        "transformers": transformers.__version__,
        "jinja2": jinja2.__version__,
        "templates": {
            "qwen05": "fixtures/qwen05-tokenizer (Qwen2.5-Coder-0.5B-Instruct's tokenizer_config.json/chat_template.jinja)",
            "deepseek-r1-distill": "fixtures/templates/deepseek-r1-distill.jinja",
        },
        "call": "qwen05: tokenizer.apply_chat_template(hf_messages, tools=tools, add_generation_prompt=True, tokenize=False); deepseek-r1-distill: _compile_jinja_template(src).render(messages=hf_messages, tools=tools, add_generation_prompt=True, bos_token, eos_token) (apply_chat_template drops content=None, which R1's template needs)",
    },
    "cases": cases,
}, sys.stdout, ensure_ascii=False, indent=1)
print()
