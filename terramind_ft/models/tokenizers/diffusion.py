"""DDIM sampling for the DiVAE tokenizer decoders, written from the spec (section 6.4); no diffusers needed.

Settings of TerraMind v1 (all fixed by the checkpoints' training):

* 1000 training steps, betas linear 1e-4 -> 0.02 (float32), rescaled to zero terminal SNR: sqrt(alpha_bar) is
  shifted so that its last value is 0 and scaled so that its first value is unchanged. Hence
  alpha_bar_0 = 0.9999, alpha_bar_99 ~ 0.89638, alpha_bar_499 ~ 0.07603, alpha_bar_999 = 0.
* "trailing" timesteps: ``arange(1000, 0, -(1000 // n)) - 1``, so n = 10 gives [999, 899, ..., 99]. When n
  does not divide 1000 this yields one step more than n (n = 3: [999, 666, 333, 0]); we keep that because it
  is what the reference computes. (diffusers' DDIMScheduler spaces "trailing" steps with a float ratio and
  differs for such n, which is why it is not used.)
* "sample" prediction: the UNet predicts x0 directly. eta = 0 (deterministic given the initial noise).
* Per step: ``eps = (x_t - sqrt(a_t) x0) / sqrt(1 - a_t)`` from the *unclipped* x0, then x0 is clipped to
  [-1, 1] (the reference's dynamic thresholding with sample_max_value 1 is exactly this clip), then
  ``x_prev = sqrt(a_prev) clip(x0) + sqrt(1 - a_prev) eps`` with ``a_prev = alpha_bar[t - 1000 // n]`` or 1
  when that index is negative. The last step therefore returns exactly ``clip(x0, -1, 1)``.
* The step runs in float32 with autocast disabled; the initial noise ``x_T ~ N(0, I)`` is drawn from the given
  generator (CPU by default, as in the reference) and then moved to the model's device.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from terramind_ft.errors import ConfigError

NUM_TRAIN_TIMESTEPS = 1000
BETA_START = 1e-4
BETA_END = 0.02
CLIP_RANGE = 1.0


def zero_terminal_snr_betas(betas: Tensor) -> Tensor:
    """Rescale a beta schedule so that alpha_bar of the last step is 0 and alpha_bar of the first is unchanged."""
    alphas_bar_sqrt = (1 - betas).cumprod(0).sqrt()
    first, last = alphas_bar_sqrt[0].clone(), alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * (first / (first - last))
    alphas_bar = alphas_bar_sqrt**2
    alphas = torch.cat([alphas_bar[:1], alphas_bar[1:] / alphas_bar[:-1]])
    return 1 - alphas


class DDIMSchedule:
    """The TerraMind v1 DDIM schedule: ``alphas_cumprod``, ``timesteps(n)`` and ``step``."""

    def __init__(self, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS, beta_start: float = BETA_START,
                 beta_end: float = BETA_END):
        self.num_train_timesteps = num_train_timesteps
        # Built on the CPU even inside a `with torch.device("meta")` block: these are numbers, not weights.
        betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32, device="cpu")
        self.betas = zero_terminal_snr_betas(betas)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)

    def step_size(self, num_steps: int) -> int:
        self._check(num_steps)
        return self.num_train_timesteps // num_steps

    def timesteps(self, num_steps: int) -> list[int]:
        """Trailing timesteps, highest first: ``arange(T, 0, -(T // n)) - 1``."""
        stride = self.step_size(num_steps)
        return [t - 1 for t in range(self.num_train_timesteps, 0, -stride)]

    def alpha_bar(self, t: int) -> Tensor:
        """alpha_bar_t as a 0-d float32 tensor; 1 for t < 0 (the "previous" step of the last one)."""
        return self.alphas_cumprod[t] if t >= 0 else torch.tensor(1.0)

    def step(self, x0_hat: Tensor, t: int, x_t: Tensor, num_steps: int) -> Tensor:
        """One deterministic DDIM update x_t -> x_{t - T//n} from the predicted clean sample."""
        device = x_t.device
        a_t = self.alpha_bar(t).to(device)
        a_prev = self.alpha_bar(t - self.step_size(num_steps)).to(device)
        with torch.autocast(device_type=device.type, enabled=False):
            x0_hat, x_t = x0_hat.float(), x_t.float()
            eps = (x_t - a_t**0.5 * x0_hat) / (1 - a_t) ** 0.5
            x0_clipped = x0_hat.clamp(-CLIP_RANGE, CLIP_RANGE)
            return a_prev**0.5 * x0_clipped + (1 - a_prev) ** 0.5 * eps

    def _check(self, num_steps: int) -> None:
        if not isinstance(num_steps, int) or isinstance(num_steps, bool) or not 1 <= num_steps <= \
                self.num_train_timesteps:
            raise ConfigError(f"the number of diffusion steps must be an integer in [1, {self.num_train_timesteps}]"
                              f", got {num_steps!r}", key="timesteps")


def initial_noise(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """x_T ~ N(0, I) in float32, drawn on the generator's device (CPU when None) and moved to ``device``.

    Drawing on the CPU by default makes a seeded CPU generator give the same noise on every accelerator.
    """
    noise_device = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(shape, generator=generator, device=noise_device, dtype=torch.float32).to(device)


@torch.no_grad()
def ddim_sample(denoise: Callable[[Tensor, int], Tensor], shape: tuple[int, ...], num_steps: int,
                schedule: DDIMSchedule, device: torch.device, generator: torch.Generator | None = None,
                progress: bool = False) -> Tensor:
    """Run the sampler: ``denoise(x_t, t) -> x0_hat``; returns the final sample (float32, in [-1, 1])."""
    steps = schedule.timesteps(num_steps)
    x = initial_noise(shape, generator, device)
    for t in tqdm(steps, desc="DDIM", disable=not progress, leave=False):
        x = schedule.step(denoise(x, t), t, x, num_steps)
    return x
