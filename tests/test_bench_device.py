"""bench/score --device (rlhf_gym.bench_device): checked before any work, recorded in the results
file, compatible with --resume, carried by the shard jobs; cpu explicit = the default numbers."""

import json
import textwrap

import pytest
import torch

from rlhf_gym.bench_device import block_device, resolve_bench_device
from rlhf_gym.bench_shards import EnvJob, Shard, ShardStore
from rlhf_gym.cli import main
from rlhf_gym.evaluation import run_bench

HAS_CUDA = torch.cuda.is_available()

# A model-free agent whose constructor takes a device, as a model agent's does: enough to see
# which device bench hands to agents (the encoders' device is checked on real models below).
DEVICE_AGENT = '''
from rlhf_gym.agents import LeadAgent

class DeviceLead:
    def __init__(self, device="own-default"):
        self.device = device
        self.name = "device-lead"
        self.lead = LeadAgent("summarization")
    def act(self, observations, infos):
        return self.lead.act(observations, infos)
'''


@pytest.mark.parametrize("bad, message", [("tpu", "unknown device"), ("cuda:x", "unknown device"),
                                          ("", "unknown device")])
def test_a_bad_device_is_one_clear_line_before_any_work(tiny_task, tmp_path, capsys, bad, message):
    out = tmp_path / "r.json"
    for command in (["bench", "--envs", tiny_task.env_id, "--out", str(out)],
                    ["score", "--env", tiny_task.env_id, "--predictions", str(tmp_path / "missing.jsonl"),
                     "--out", str(out)]):
        assert main([*command, "--device", bad]) == 2
        err = capsys.readouterr().err
        assert f"--device {bad!r}: {message}" in err and "cpu, cuda, cuda:N, mps or auto" in err
        # checked first: not even the (missing) predictions file was read, and nothing was written
        assert "predictions file not found" not in err
        assert not out.exists() and not (tmp_path / "r.json.shards").exists()


@pytest.mark.skipif(HAS_CUDA, reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error_and_auto_is_the_cpu(tiny_task, tmp_path, capsys):
    out = tmp_path / "r.json"
    for device in ("cuda", "cuda:1"):
        assert main(["bench", "--envs", tiny_task.env_id, "--out", str(out), "--device", device]) == 2
        err = capsys.readouterr().err
        assert f"--device {device}: torch sees no CUDA GPU" in err and "use --device cpu" in err
        assert not out.exists()
    assert resolve_bench_device("auto") == "cpu" and resolve_bench_device(None) == "cpu"
    results = run_bench("lead", [tiny_task.env_id], batch_size=3, show_progress=False, device="auto")
    assert results["device"] == {"requested": "auto", "device": "cpu", "gpu": None, "agent": "cpu"}
    assert results["envs"][tiny_task.env_id]["device"] == "cpu"


def test_auto_follows_torch_and_a_ray_cluster_its_gpus():
    assert resolve_bench_device("AUTO") == ("cuda" if HAS_CUDA else "cpu")
    assert resolve_bench_device("cpu") == "cpu"
    # on a Ray cluster (--address) its GPUs decide, not this machine's
    assert resolve_bench_device("auto", cluster_gpus=2) == "cuda"
    assert resolve_bench_device("auto", cluster_gpus=0) == "cpu"
    with pytest.raises(ValueError, match="the Ray cluster has no GPU"):
        resolve_bench_device("cuda", cluster_gpus=0)
    with pytest.raises(ValueError, match="use --device cuda"):
        resolve_bench_device("cuda:1", cluster_gpus=4)


def test_model_agents_get_the_device_only_when_it_is_asked_for(tiny_task, tmp_path):
    from rlhf_gym.agents import make_agent

    path = tmp_path / "device_agent.py"
    path.write_text(textwrap.dedent(DEVICE_AGENT))
    spec = f"{path}:DeviceLead"
    assert make_agent(spec, tiny_task).device == "own-default"  # no --device: the agent's own default
    assert make_agent(spec, tiny_task, device="cpu").device == "cpu"
    assert make_agent(f"pad:{spec}", tiny_task, device="cpu").base.device == "cpu"  # wrappers pass it on
    # through bench: the shard job carries it to the worker that builds the agent
    from rlhf_gym.bench_shards import _context

    results = run_bench(spec, [tiny_task.env_id], batch_size=3, show_progress=False, device="cpu")
    assert results["device"]["agent"] == "cpu"
    job = EnvJob(tiny_task.env_id, spec, None, "test", None, 0.0, 3, None, None, "cpu", "cpu")
    assert _context(job).agent.device == "cpu"
    default = run_bench(spec, [tiny_task.env_id], batch_size=3, show_progress=False)
    assert default["device"] == {"requested": "cpu", "device": "cpu", "gpu": None, "agent": "the agent's default"}
    assert default["envs"] == results["envs"]


def test_seeded_bench_records_the_device(tiny_task, tmp_path):
    results = run_bench("lead", [tiny_task.env_id], batch_size=3, seeds=[0, 1], show_progress=False, device="auto",
                        out=tmp_path / "seeds.json")
    assert results["device"]["requested"] == "auto" and results["device"]["device"] == resolve_bench_device("auto")
    assert json.loads((tmp_path / "seeds.json").read_text())["envs"][tiny_task.env_id]["device"] == \
        resolve_bench_device("auto")


def test_resume_keeps_shards_and_blocks_made_on_another_device_and_says_so(tiny_task, tmp_path):
    job = EnvJob(tiny_task.env_id, "lead", None, "test", None, 0.0, 2, None, None, "cpu", None)
    gpu_job = EnvJob(tiny_task.env_id, "lead", None, "test", None, 0.0, 2, None, None, "cuda", "cuda")
    store = ShardStore(tmp_path / "r.json", {"limit": None, "shard_size": 2}, resume=True)
    assert store._key(Shard(job, 0, 2)) == store._key(Shard(gpu_job, 0, 2))  # the device is no resume setting
    assert block_device([{"device": "cuda"}, {"device": "cpu"}, {}]) == "cpu+cuda"

    out = tmp_path / "r.json"
    first = run_bench("lead", [tiny_task.env_id], batch_size=2, shard_size=2, out=out, show_progress=False)
    assert first["envs"][tiny_task.env_id]["device"] == "cpu"
    # a file whose block was scored on a GPU (as such a run writes it): --resume keeps it as it is
    made_on_gpu = json.loads(out.read_text())
    made_on_gpu["envs"][tiny_task.env_id]["device"] = "cuda"
    out.write_text(json.dumps(made_on_gpu))
    resumed = run_bench("lead", [tiny_task.env_id], batch_size=2, shard_size=2, out=out, resume=True,
                        show_progress=False, device="cpu")
    assert resumed["envs"][tiny_task.env_id]["device"] == "cuda"  # the block says where it was scored
    assert resumed["device"]["device"] == "cpu"  # the file, where this run would score
    assert resumed["envs"][tiny_task.env_id]["metrics"] == first["envs"][tiny_task.env_id]["metrics"]


def test_cpu_explicit_gives_the_default_numbers_on_the_real_encoders(tmp_path, monkeypatch):
    """MiniLM reward, MPNet gold judge and the e5 judge of Translation-v2, placed on the device
    asked for: the default run and --device cpu agree bit for bit (the disk cache off, so both
    encode every text themselves)."""
    monkeypatch.setenv("RLHF_GYM_EMBED_CACHE", "off")
    env_id = "rlhf_gym/Translation-v2"
    default = run_bench("lead", [env_id], limit=2, show_progress=False)
    assert main(["bench", "--agent", "lead", "--envs", env_id, "--limit", "2", "--device", "cpu",
                 "--out", str(tmp_path / "cpu.json")]) == 0
    explicit = json.loads((tmp_path / "cpu.json").read_text())
    a, b = default["envs"][env_id], explicit["envs"][env_id]
    assert a["metrics"] == b["metrics"] and a["generations"] == b["generations"]
    assert a["device"] == b["device"] == "cpu"
    assert explicit["device"] == {"requested": "cpu", "device": "cpu", "gpu": None, "agent": "cpu"}
    # the encoders really are where the scorer put them
    from rlhf_gym.rewards.embedding import get_encoder
    from rlhf_gym.rewards.gold import get_mpnet_encoder

    assert get_encoder().device == "cpu" and get_mpnet_encoder().device == "cpu"
    assert next(get_encoder().model.parameters()).device.type == "cpu"


@pytest.mark.slow
def test_ray_shards_carry_the_device_and_equal_the_local_run(tmp_path):
    """A local Ray with 2 CPUs, 2 shards: --device auto (the CPU here) travels with each shard's
    job to its worker, which records it; the numbers equal the local --device cpu run's."""
    pytest.importorskip("ray")
    env_id = "rlhf_gym/Summarization-v0"
    local = run_bench("lead", [env_id], limit=4, shard_size=2, batch_size=2, show_progress=False, device="cpu",
                      out=tmp_path / "local.json")
    on_ray = run_bench("lead", [env_id], limit=4, shard_size=2, batch_size=2, executor="ray", num_cpus=2,
                       show_progress=False, device="auto", out=tmp_path / "ray.json")
    assert on_ray["envs"] == local["envs"]
    assert on_ray["envs"][env_id]["device"] == ("cuda" if HAS_CUDA else "cpu")
    assert on_ray["device"]["requested"] == "auto"


# Replies with the device it was built on: which device bench gave a DialogueMemory agent shows in
# the results' own generations.
DEVICE_ECHO_AGENT = '''
class DeviceEcho:
    def __init__(self, device="own-default"):
        self.device = device
        self.name = "device-echo"
    def act(self, observations, infos):
        return [f"I run on {self.device}." for _ in observations]
'''


def test_dialogue_memory_bench_gives_its_agent_and_reward_model_the_device(tmp_path):
    path = tmp_path / "device_echo.py"
    path.write_text(textwrap.dedent(DEVICE_ECHO_AGENT))
    spec, env_id = f"{path}:DeviceEcho", "rlhf_gym/DialogueMemory-v1"
    asked = run_bench(spec, [env_id], limit=1, batch_size=4, show_progress=False, device="cpu")
    block = asked["envs"][env_id]
    assert block["device"] == "cpu"
    assert {g["prediction"] for g in block["generations"]} == {"I run on cpu."}
    default = run_bench(spec, [env_id], limit=1, batch_size=4, show_progress=False)["envs"][env_id]
    assert {g["prediction"] for g in default["generations"]} == {"I run on own-default."}
    assert block["n_turns"] == default["n_turns"] and default["device"] == "cpu"


@pytest.mark.skipif(HAS_CUDA, reason="needs a machine without CUDA")
def test_dialogue_memory_bench_checks_the_device_before_any_work(tmp_path, capsys):
    out = tmp_path / "m.json"
    assert main(["bench", "--envs", "rlhf_gym/DialogueMemory-v1", "--agent", "reference", "--limit", "1",
                 "--out", str(out), "--device", "cuda"]) == 2
    assert "--device cuda: torch sees no CUDA GPU" in capsys.readouterr().err
    assert not out.exists()
