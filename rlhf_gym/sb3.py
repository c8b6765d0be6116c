"""A stable-baselines3 policy that is a Hugging Face causal LM, for the token-level envs.

``PPO(LMActorCriticPolicy, gymnasium.make("rlhf_gym/Dialogue-Token-v0"))`` (or ``A2C``) trains on
the env as it is: one env step is one token, the actor is the LM's next-token distribution at the
newest position, the critic a linear value head on the LM's last hidden state there.

policy_kwargs:

- ``model``: a local path or hub id (``AutoModelForCausalLM.from_pretrained``), a
  ``PretrainedConfig`` (a randomly initialised model of that architecture), or a
  ``PreTrainedModel`` instance (used as is, not copied). Default: a small randomly initialised
  GPT-2 sized for the env's vocabulary (``tiny_gpt2_config``).
- ``temperature``: divides the logits (sampling, log-probs and entropy all use the tempered
  distribution, so PPO's ratios stay consistent).

Saving: ``model.save()`` stores the LM weights in the policy state dict; ``PPO.load()`` rebuilds the
architecture from ``policy_kwargs["model"]`` and then loads them. A path/hub id must therefore still
resolve at load time; a config or the default keeps the zip self-contained; a model instance is
pickled into the zip as well (the file is then about twice the model size).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import CategoricalDistribution, Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

__all__ = ["LMActorCriticPolicy", "TokenObsPassthrough", "tiny_gpt2_config"]


def tiny_gpt2_config(vocab_size: int = 8192, n_positions: int = 512, n_layer: int = 2, n_embd: int = 128,
                     n_head: int = 4, **overrides: Any):
    """A small GPT-2 config on the project tokenizer's special ids, dropout off."""
    from transformers import GPT2Config

    from rlhf_gym.tokenizer import load_tokenizer

    tok = load_tokenizer()
    kwargs = dict(vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=tok.eos_token_id,
                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    kwargs.update(overrides)
    return GPT2Config(**kwargs)


class TokenObsPassthrough(BaseFeaturesExtractor):
    """Hands the (preprocessed) observation dict to the policy untouched.

    SB3's default extractors flatten or concatenate the dict into one float vector, which would
    lose which tensor is the ids and which the mask; the LM needs both as they are.
    """

    def __init__(self, observation_space: spaces.Space):
        super().__init__(observation_space, features_dim=1)

    def forward(self, observations):  # type: ignore[override]
        return observations


def _zero_dropout(model: nn.Module) -> nn.Module:
    # PPO's importance ratio compares log-probs from the rollout with those from the update; any
    # dropout makes them differ for the same weights and biases the ratio.
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    for key in ("resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_first_dropout", "dropout", "attention_dropout",
                "hidden_dropout", "hidden_dropout_prob", "attention_probs_dropout_prob", "dropout_rate"):
        if isinstance(getattr(model.config, key, None), float):
            setattr(model.config, key, 0.0)
    return model


def _max_positions(config) -> int | None:
    for key in ("n_positions", "max_position_embeddings"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None


class LMActorCriticPolicy(ActorCriticPolicy):
    """Actor-critic policy whose actor is a causal LM's next-token distribution.

    Observations must be the token envs' ``{"input_ids", "attention_mask"}`` dict, left-padded so
    the newest token is last; the action space ``Discrete(vocab)`` must match the LM's output size.
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space, lr_schedule: Schedule,
                 model: Any = None, temperature: float = 1.0, **kwargs: Any):
        if not isinstance(observation_space, spaces.Dict) or "input_ids" not in observation_space.spaces:
            raise ValueError("LMActorCriticPolicy needs a Dict observation space with 'input_ids' (and "
                             f"'attention_mask'), as the rlhf_gym *-Token-v0 envs have; got {observation_space}")
        if not isinstance(action_space, spaces.Discrete):
            raise ValueError(f"LMActorCriticPolicy needs a Discrete(vocab) action space, got {action_space}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        extractor = kwargs.pop("features_extractor_class", TokenObsPassthrough)
        if extractor is not TokenObsPassthrough:
            raise ValueError("LMActorCriticPolicy reads the observation dict itself; features_extractor_class "
                             f"cannot be changed (got {extractor.__name__})")
        if not kwargs.get("share_features_extractor", True):
            raise ValueError("LMActorCriticPolicy shares the LM between actor and critic; "
                             "share_features_extractor=False is not supported")
        if kwargs.get("use_sde"):
            raise ValueError("use_sde is for continuous actions; the token envs have Discrete actions")
        # In a tuple so that a model instance is not registered as a child module here: _build
        # (called by ActorCriticPolicy's __init__) registers it once, as ``self.lm``.
        self._model_spec = (model,)
        self.temperature = float(temperature)
        kwargs.setdefault("ortho_init", False)  # an LM arrives initialised (or pre-trained); keep it so
        super().__init__(observation_space, action_space, lr_schedule,
                         features_extractor_class=TokenObsPassthrough, **kwargs)

    # ----------------------------------------------------------------------------- building

    def _load_lm(self) -> nn.Module:
        from transformers import AutoModelForCausalLM, PretrainedConfig

        spec, vocab = self._model_spec[0], int(self.action_space.n)
        seq_len = int(self.observation_space["input_ids"].shape[-1])
        if spec is None:
            lm = AutoModelForCausalLM.from_config(tiny_gpt2_config(vocab_size=vocab, n_positions=max(512, seq_len)))
        elif isinstance(spec, PretrainedConfig):
            lm = AutoModelForCausalLM.from_config(spec)
        elif isinstance(spec, (str,)) or hasattr(spec, "__fspath__"):
            try:
                lm = AutoModelForCausalLM.from_pretrained(str(spec))
            except OSError as err:
                raise FileNotFoundError(f"cannot load causal LM {str(spec)!r}: not a local model directory and not "
                                        f"in the hub cache (offline?) ({err})") from err
        elif isinstance(spec, nn.Module) and hasattr(spec, "config"):
            lm = spec
        else:
            raise TypeError("policy_kwargs['model'] must be None, a path or hub id, a transformers PretrainedConfig "
                            f"or a PreTrainedModel; got {type(spec).__name__}")
        if getattr(lm.config, "is_encoder_decoder", False):
            raise ValueError("LMActorCriticPolicy needs a decoder-only causal LM; the token envs feed one "
                             "left-padded sequence, which an encoder-decoder model cannot read")
        out = lm.get_output_embeddings()
        lm_vocab = int(out.weight.shape[0]) if out is not None else int(lm.config.vocab_size)
        if lm_vocab != vocab:
            raise ValueError(f"the LM predicts {lm_vocab} tokens but the env's action space is Discrete({vocab}); "
                             "use a model trained on the env's tokenizer (or resize its embeddings to "
                             "len(env.unwrapped.tokenizer))")
        max_pos = _max_positions(lm.config)
        if max_pos is not None and max_pos < seq_len:
            raise ValueError(f"the env's observations are {seq_len} tokens but the LM has only {max_pos} positions; "
                             "lower max_prompt_tokens / max_new_tokens or use a longer-context model")
        return _zero_dropout(lm)

    def _build(self, lr_schedule: Schedule) -> None:
        import inspect

        self.lm = self._load_lm()
        self.lm.eval()
        hidden = int(getattr(self.lm.config, "hidden_size", None) or self.lm.get_input_embeddings().weight.shape[1])
        # Zero start: the first advantages are then the plain returns, and the critic cannot
        # inject noise into the actor's first updates.
        self.value_net = nn.Linear(hidden, 1)
        nn.init.zeros_(self.value_net.weight)
        nn.init.zeros_(self.value_net.bias)
        # Most HF causal LMs can project only the last position onto the vocabulary; that is the
        # only position we read, and the vocab projection dominates a small LM's cost.
        self._logits_to_keep = "logits_to_keep" in inspect.signature(self.lm.forward).parameters
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def train(self, mode: bool = True):
        # SB3 switches to train mode for updates; the LM stays in eval mode so that no
        # training-only behaviour (dropout, if a model re-enables it) changes the log-probs.
        super().train(mode)
        self.lm.eval()
        return self

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.pop("features_extractor_class", None)
        data.update(model=self._model_spec[0], temperature=self.temperature)
        return data

    # ------------------------------------------------------------------------------ forward

    def _lm_head(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor]:
        """(logits at the newest position / temperature, value there) for a batch of observations."""
        features = self.extract_features(obs)
        # SB3 hands observations over as float32 (exact for ids below 2**24); the LM needs long.
        input_ids = features["input_ids"].round().long()
        mask = features.get("attention_mask")
        mask = th.ones_like(input_ids) if mask is None else mask.round().long()
        if input_ids.dim() == 1:
            input_ids, mask = input_ids.unsqueeze(0), mask.unsqueeze(0)
        # Columns that are padding in every row change nothing (masked keys, positions from the
        # mask); dropping them saves most of the compute while prompts are short.
        active = mask.any(dim=0).nonzero()
        start = int(active[0]) if len(active) else input_ids.shape[1] - 1
        input_ids, mask = input_ids[:, start:], mask[:, start:]
        # Left padding: positions count real tokens only, as HF generate computes them.
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        kwargs = {"logits_to_keep": 1} if self._logits_to_keep else {}
        out = self.lm(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                      output_hidden_states=True, use_cache=False, return_dict=True, **kwargs)
        logits = out.logits[:, -1, :].float() / self.temperature
        values = self.value_net(out.hidden_states[-1][:, -1, :].float())
        return logits, values

    def _distribution(self, logits: th.Tensor) -> Distribution:
        assert isinstance(self.action_dist, CategoricalDistribution)
        return self.action_dist.proba_distribution(action_logits=logits)

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        logits, values = self._lm_head(obs)
        distribution = self._distribution(logits)
        actions = distribution.get_actions(deterministic=deterministic)
        return actions.reshape((-1, *self.action_space.shape)), values, distribution.log_prob(actions)

    def evaluate_actions(self, obs: PyTorchObs, actions: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        logits, values = self._lm_head(obs)
        distribution = self._distribution(logits)
        return values, distribution.log_prob(actions), distribution.entropy()

    def get_distribution(self, obs: PyTorchObs) -> Distribution:
        return self._distribution(self._lm_head(obs)[0])

    def predict_values(self, obs: PyTorchObs) -> th.Tensor:
        return self._lm_head(obs)[1]

    def next_token_logits(self, obs: dict[str, np.ndarray]) -> th.Tensor:
        """The (tempered) next-token logits for raw env observations, without gradients."""
        tensor_obs, _ = self.obs_to_tensor(obs)
        with th.no_grad():
            return self._lm_head(tensor_obs)[0]
