import pytest

from rlhf_gym.agents import LeadAgent, RetrievalAgent, make_agent
from rlhf_gym.data import Example
from rlhf_gym.evaluation import generate
from rlhf_gym.tasks import get_task


def test_a_new_agent_plugs_in_from_a_file(tmp_path, tiny_task):
    (tmp_path / "shout.py").write_text(
        "class ShoutAgent:\n"
        "    name = 'shout'\n"
        "    def act(self, observations, infos):\n"
        "        return [o.upper() for o in observations]\n")
    agent = make_agent(f"{tmp_path / 'shout.py'}:ShoutAgent", tiny_task)
    out = generate(agent, tiny_task.examples("test"), show_progress=False)
    assert out[0]["prediction"] == "SAY SOMETHING ABOUT NUMBER 0."


def test_unknown_agent_spec_lists_the_known_ones(tiny_task):
    with pytest.raises(ValueError, match="unknown agent spec 'nope'.*lead"):
        make_agent("nope", tiny_task)


def test_lead_baselines_by_task_kind():
    summ = Example(id="s", prompt="p", references=("r",), source="First sentence here. Second one.")
    assert LeadAgent("summarization").act(["p"], [{"source": summ.source}]) == ["First sentence here."]
    assert LeadAgent("translation").act(["p"], [{"source": "原文"}]) == ["原文"]


def test_retrieval_returns_the_nearest_training_reference():
    train = [Example(id=str(i), prompt=s, references=(f"ref {i}",), source=s)
             for i, s in enumerate(["the cat sat on the mat", "stock markets fell sharply today",
                                    "a recipe for tomato soup", "神は光を見て善しとされた"])]
    agent = RetrievalAgent(train)
    assert agent.act(["?"], [{"source": "markets fell sharply"}]) == ["ref 1"]
    assert agent.act(["?"], [{"source": "光を見て"}]) == ["ref 3"]


def test_reference_agent_is_exact_on_the_builtin_summarization_task():
    task = get_task("rlhf_gym/Summarization-v0")
    exs = task.examples("test")[:5]
    out = generate(make_agent("reference", task), exs, show_progress=False)
    assert [o["prediction"] for o in out] == [ex.references[0] for ex in exs]


def test_hf_model_agent_generates_with_a_local_model(tmp_path):
    torch = pytest.importorskip("torch")
    from transformers import GPT2Config, GPT2LMHeadModel

    from rlhf_gym.tokenizer import load_tokenizer

    tok = load_tokenizer()
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=32, n_layer=1, n_head=2,
                                       eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id))
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    task = get_task("rlhf_gym/Translation-v0")
    agent = make_agent(f"hf:{tmp_path / 'm'}", task)
    prompts = [ex.prompt for ex in task.examples("test")[:3]]
    a, b = agent.act(prompts, None), agent.act(prompts, None)
    assert a == b and len(a) == 3 and all(isinstance(x, str) for x in a)  # greedy: reproducible


def test_lead_is_always_a_valid_action():
    """Some partner turns are longer than a reply may be: the echo baseline is cut to the limit
    at a word boundary instead of producing an invalid action."""
    from rlhf_gym.agents import make_agent
    from rlhf_gym.tasks import get_task

    task = get_task("rlhf_gym/Dialogue-v1")
    long_turn = "word " * 200
    [out] = make_agent("lead", task).act(["p"], [{"source": long_turn}])
    assert 0 < len(out) <= task.max_response_chars and long_turn.startswith(out) and not out.endswith(" ")
    assert LeadAgent("dialogue").act(["p"], [{"source": long_turn}]) == [long_turn]  # no limit given: unchanged
