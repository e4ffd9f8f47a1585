"""Chat templates: trimlm's hand-written renderers against Jinja2.

Jinja2 is the independent reference: it renders each template the way
Hugging Face's apply_chat_template does (trim_blocks, lstrip_blocks,
raise_exception), and trimlm (through tests/tool_chat.c) must produce the same
bytes, or fail where the template raises.

  test_chat_template.py synthetic TOOL_CHAT   hand-written family templates
  test_chat_template.py real TOOL_CHAT        the default model's own template
"""
import json
import os
import subprocess
import sys

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from testutil import real_model_path, scratch_dir

# ------------------------------------------------------------ templates
# Transcribed from the families' published tokenizer_config.json files.

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
          "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")

QWEN2 = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
         "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
         "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
         "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")

LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}"
          "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
          "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
          "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
          "{% endif %}")

LLAMA2 = ("{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
          "{% set system_message = messages[0]['content'] %}{% else %}"
          "{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
          "{% for message in loop_messages %}"
          "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
          "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
          "{% endif %}{% if loop.index0 == 0 and system_message != false %}"
          "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
          "{% else %}{% set content = message['content'] %}{% endif %}"
          "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
          "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}"
          "{% endif %}{% endfor %}")

MISTRAL = ("{{ bos_token }}{% for message in messages %}"
           "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
           "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
           "{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
           "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
           "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}"
           "{% endif %}{% endfor %}")

ZEPHYR = ("{% for message in messages %}\n{% if message['role'] == 'user' %}\n"
          "{{ '<|user|>\\n' + message['content'] + eos_token }}\n"
          "{% elif message['role'] == 'system' %}\n{{ '<|system|>\\n' + message['content'] + eos_token }}\n"
          "{% elif message['role'] == 'assistant' %}\n"
          "{{ '<|assistant|>\\n'  + message['content'] + eos_token }}\n{% endif %}\n"
          "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n"
          "{% endfor %}")

GEMMA2 = ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
          "{{ raise_exception('System role not supported') }}{% endif %}"
          "{% for message in messages %}"
          "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
          "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
          "{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}"
          "{% else %}{% set role = message['role'] %}{% endif %}"
          "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}")

GEMMA3 = ("{{ bos_token }}\n{%- if messages[0]['role'] == 'system' -%}\n"
          "    {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}\n"
          "    {%- set loop_messages = messages[1:] -%}\n{%- else -%}\n"
          "    {%- set first_user_prefix = \"\" -%}\n    {%- set loop_messages = messages -%}\n"
          "{%- endif -%}\n{%- for message in loop_messages -%}\n"
          "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
          "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
          "    {%- endif -%}\n"
          "    {%- if (message['role'] == 'assistant') -%}{%- set role = \"model\" -%}"
          "{%- else -%}{%- set role = message['role'] -%}{%- endif -%}\n"
          "    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}"
          "{{ message['content'] | trim }}{{ '<end_of_turn>\\n' }}\n"
          "{%- endfor -%}\n{%- if add_generation_prompt -%}\n    {{'<start_of_turn>model\\n'}}\n{%- endif -%}\n")

# name, template, bos text, eos text, the template trimlm should fall back to
CASES = [
    ("chatml", CHATML, "<|endoftext|>", "<|im_end|>", None),
    ("qwen2-default-system", QWEN2, "", "<|im_end|>", None),
    ("llama3", LLAMA3, "<|begin_of_text|>", "<|eot_id|>", None),
    ("llama2", LLAMA2, "<s>", "</s>", None),
    ("mistral", MISTRAL, "<s>", "</s>", None),
    ("zephyr", ZEPHYR, "<s>", "</s>", None),
    ("gemma2", GEMMA2, "<bos>", "<eos>", None),
    ("gemma3", GEMMA3, "<bos>", "<eos>", None),
    ("unknown-falls-back-to-chatml", "{% for m in messages %}{{ m['content'] }}{% endfor %}",
     "<s>", "</s>", CHATML),
]

U, A, S = "user", "assistant", "system"
CONVERSATIONS = [
    [(U, "What is the capital of France?")],
    [(S, "You are terse."), (U, "Hi!")],
    [(U, "Hello"), (A, "Hi, how can I help?"), (U, "Tell me a joke.")],
    [(S, "Be nice."), (U, "one"), (A, "two"), (U, "three")],
    [(U, "  padded with spaces and a newline \n"), (A, "\tspaced answer  ")],
    [(U, "Unicode: h\u00e9llo w\u00f6rld \u4f60\u597d \U0001F30D, quotes ' \" and \\ backslash")],
    [(U, "")],
    [(A, "assistant first"), (U, "then user")],
    [(S, "only a system message")],
    [(U, "two"), (U, "users in a row")],
]


def jinja_render(template, messages, add_generation_prompt, bos, eos):
    """Renders as transformers' apply_chat_template; None when it raises."""
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template).render(
            messages=messages, add_generation_prompt=add_generation_prompt,
            bos_token=bos, eos_token=eos)
    except jinja2.exceptions.TemplateError:
        return None


def trimlm_render(tool, out_dir, tag, messages, gen, template=None, bos="", eos="", model=None):
    msg_path = os.path.join(out_dir, f"chat-{tag}.json")
    with open(msg_path, "w", encoding="utf-8") as f:
        json.dump(messages, f, ensure_ascii=False)
    cmd = [tool]
    if model:
        cmd += ["--model", model]
    else:
        tmpl_path = os.path.join(out_dir, f"chat-{tag}.jinja")
        with open(tmpl_path, "w", encoding="utf-8") as f:
            f.write(template)
        cmd += ["--template", tmpl_path, "--bos", bos, "--eos", eos]
    if gen:
        cmd.append("--gen")
    cmd.append(msg_path)
    p = subprocess.run(cmd, capture_output=True, timeout=120)
    return p.returncode, p.stdout.decode("utf-8"), p.stderr.decode("utf-8", "replace")


def compare(tool, out_dir, name, reference_template, messages_list, bos, eos, **kw):
    failures = 0
    checked = 0
    for ci, conv in enumerate(messages_list):
        messages = [{"role": r, "content": c} for r, c in conv]
        for gen in (False, True):
            tag = f"{name}-{ci}-{int(gen)}"
            want = jinja_render(reference_template, messages, gen, bos, eos)
            rc, got, err = trimlm_render(tool, out_dir, tag, messages, gen, bos=bos, eos=eos, **kw)
            checked += 1
            if want is None:
                ok = rc == 1 and err.strip() != "" and "\n" not in err.strip()
                if not ok:
                    print(f"FAIL {tag}: Jinja raises, trimlm gave rc={rc} out={got!r} err={err!r}")
            else:
                ok = rc == 0 and got == want
                if not ok:
                    print(f"FAIL {tag}: rc={rc} err={err.strip()!r}\n  jinja : {want!r}\n  trimlm: {got!r}")
            failures += not ok
    return checked, failures


def gguf_template_and_specials(path):
    """The chat template and BOS/EOS texts, read with the gguf package."""
    import gguf
    reader = gguf.GGUFReader(path)

    def field_str(name):
        f = reader.fields[name]
        return bytes(f.parts[f.data[0]]).decode("utf-8")

    def token_text(key):
        f = reader.fields.get(key)
        if f is None:
            return ""
        tid = int(f.parts[f.data[0]][0])
        toks = reader.fields["tokenizer.ggml.tokens"]
        return bytes(toks.parts[toks.data[tid]]).decode("utf-8")

    return (field_str("tokenizer.chat_template"), token_text("tokenizer.ggml.bos_token_id"),
            token_text("tokenizer.ggml.eos_token_id"))


def main():
    mode, tool = sys.argv[1], sys.argv[2]
    out_dir = scratch_dir("chat")
    total = failed = 0
    if mode == "synthetic":
        for name, template, bos, eos, reference in CASES:
            c, f = compare(tool, out_dir, name, reference or template, CONVERSATIONS, bos, eos,
                           template=template)
            print(f"{name}: {c - f}/{c} renderings match Jinja2")
            total += c
            failed += f
    else:
        # Every conversation through the renderer with the template text as
        # read here from the GGUF; a few through the public API on the loaded
        # model (which must find the same template and BOS/EOS on its own;
        # each load takes seconds, hence only a few).
        model = real_model_path()
        template, bos, eos = gguf_template_and_specials(model)
        assert "<|im_start|>" in template, "the default model should have a ChatML template"
        c, f = compare(tool, out_dir, "smollm2", template, CONVERSATIONS, bos, eos,
                       template=template)
        print(f"smollm2 template text: {c - f}/{c} renderings match Jinja2")
        c2, f2 = compare(tool, out_dir, "smollm2-model", template, CONVERSATIONS[:2], bos, eos,
                         model=model)
        print(f"smollm2 through tlm_chat_render: {c2 - f2}/{c2} renderings match Jinja2")
        total, failed = c + c2, f + f2
    print(f"{total - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
