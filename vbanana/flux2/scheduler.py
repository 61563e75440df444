"""klein's step schedule: diffusers' FlowMatchEulerDiscreteScheduler as klein's pipeline drives it.

The pipeline asks for N steps with sigmas linspace(1, 1/N, N); the scheduler shifts them, either by the
resolution-dependent `mu` (use_dynamic_shifting: sigma' = e^mu / (e^mu + (1/sigma - 1)), with klein's
`compute_empirical_mu(image_seq_len, N)`, a separate line above 4300 tokens) or by its static `shift`
(sigma' = s * sigma / (1 + (s - 1) * sigma)), optionally stretched to `shift_terminal`, and appends 0.
The model sees t = sigma (diffusers passes timestep / 1000 with timestep = sigma * 1000, both float32); an
Euler step is x + (sigma_next - sigma) * v. Every branch is read from the folder's `scheduler_config.json`,
never assumed; options this sampler does not implement are an error naming them. Arithmetic follows
diffusers' dtypes (float32 sigmas), so the schedules are identical, not merely close.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Mapping

import numpy as np

CONFIG_NAME = "scheduler_config.json"


def compute_empirical_mu(image_seq_len: int, num_steps: int) -> float:
  """klein's shift parameter for `image_seq_len` target tokens and `num_steps` steps: linear in the step
  count between fits at 10 and 200 steps, and one line in the sequence length above 4300 tokens."""
  a1, b1 = 8.73809524e-05, 1.89833333
  a2, b2 = 0.00016927, 0.45666666
  if image_seq_len > 4300:
    return float(a2 * image_seq_len + b2)
  m_200 = a2 * image_seq_len + b2
  m_10 = a1 * image_seq_len + b1
  a = (m_200 - m_10) / 190.0
  b = m_200 - 200.0 * a
  return float(a * num_steps + b)


@dataclasses.dataclass(frozen=True)
class FlowMatchSchedule:
  """The fields of a FlowMatchEulerDiscreteScheduler config that shape the sigmas (diffusers' defaults)."""
  num_train_timesteps: int = 1000
  shift: float = 1.0
  use_dynamic_shifting: bool = False
  time_shift_type: str = "exponential"
  shift_terminal: float | None = None
  use_karras_sigmas: bool = False
  use_exponential_sigmas: bool = False

  UNSUPPORTED = ("use_beta_sigmas", "invert_sigmas", "stochastic_sampling")

  @classmethod
  def from_dict(cls, d: Mapping[str, Any], source: str = CONFIG_NAME) -> "FlowMatchSchedule":
    name = d.get("_class_name", "FlowMatchEulerDiscreteScheduler")
    if name != "FlowMatchEulerDiscreteScheduler":
      raise ValueError(f"{source}: _class_name {name!r}; klein's sampler is 'FlowMatchEulerDiscreteScheduler'")
    on = [k for k in cls.UNSUPPORTED if d.get(k)]
    if on:
      raise ValueError(f"{source}: {', '.join(f'{k}=true' for k in on)} is not supported by vbanana's sampler")
    if d.get("use_flow_sigmas"):
      raise ValueError(f"{source}: use_flow_sigmas=true is not supported (klein passes its own sigmas)")
    if sum(bool(d.get(k)) for k in ("use_karras_sigmas", "use_exponential_sigmas")) > 1:
      raise ValueError(f"{source}: only one of use_karras_sigmas, use_exponential_sigmas may be set")
    shift_type = d.get("time_shift_type", "exponential")
    if shift_type not in ("exponential", "linear"):
      raise ValueError(f"{source}: time_shift_type {shift_type!r}; expected 'exponential' or 'linear'")
    return cls(num_train_timesteps=int(d.get("num_train_timesteps", 1000)), shift=float(d.get("shift", 1.0)),
               use_dynamic_shifting=bool(d.get("use_dynamic_shifting", False)), time_shift_type=shift_type,
               shift_terminal=d.get("shift_terminal") or None,
               use_karras_sigmas=bool(d.get("use_karras_sigmas", False)),
               use_exponential_sigmas=bool(d.get("use_exponential_sigmas", False)))

  @classmethod
  def from_folder(cls, path: str) -> "FlowMatchSchedule":
    """From a pipeline folder (its `scheduler/`), a scheduler folder, or the json file itself."""
    candidates = [path, os.path.join(path, CONFIG_NAME), os.path.join(path, "scheduler", CONFIG_NAME)]
    found = next((c for c in candidates if os.path.isfile(c)), None)
    if found is None:
      raise FileNotFoundError(f"{path}: no {CONFIG_NAME} (looked in {path} and {os.path.join(path, 'scheduler')})")
    try:
      with open(found) as f:
        d = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{found}: not valid JSON ({e})") from None
    return cls.from_dict(d, found)

  def sigmas(self, num_steps: int, image_seq_len: int) -> np.ndarray:
    """float32 (num_steps + 1,): the shifted noise levels from ~1 down to the appended 0."""
    if num_steps < 1:
      raise ValueError(f"num_inference_steps {num_steps}: must be at least 1")
    sigmas = np.linspace(1.0, 1 / num_steps, num_steps).astype(np.float32)
    if self.use_dynamic_shifting:
      mu = compute_empirical_mu(image_seq_len, num_steps)
      if self.time_shift_type == "exponential":
        sigmas = math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1) ** 1.0)
      else:
        sigmas = mu / (mu + (1 / sigmas - 1) ** 1.0)
    else:
      sigmas = self.shift * sigmas / (1 + (self.shift - 1) * sigmas)
    if self.shift_terminal:
      if num_steps < 2:
        raise ValueError(f"shift_terminal={self.shift_terminal} needs at least 2 steps (diffusers divides by 0)")
      one_minus = 1 - sigmas
      sigmas = 1 - one_minus / (one_minus[-1] / (1 - self.shift_terminal))
    if self.use_karras_sigmas or self.use_exponential_sigmas:
      hi, lo = float(sigmas[0]), float(sigmas[-1])
      if self.use_karras_sigmas:
        ramp = np.linspace(0, 1, num_steps)
        sigmas = (hi ** (1 / 7.0) + ramp * (lo ** (1 / 7.0) - hi ** (1 / 7.0))) ** 7.0
      else:
        sigmas = np.exp(np.linspace(math.log(hi), math.log(lo), num_steps))
    return np.concatenate([np.asarray(sigmas, np.float32), np.zeros(1, np.float32)])

  def model_times(self, sigmas: np.ndarray) -> np.ndarray:
    """float32 (N,): what the transformer is given at each step, diffusers' (sigma * 1000) / 1000 in float32."""
    timesteps = (sigmas[:-1] * np.float32(self.num_train_timesteps)).astype(np.float32)
    return (timesteps / np.float32(1000)).astype(np.float32)
