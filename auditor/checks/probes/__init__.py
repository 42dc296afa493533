"""Probes: transforms that remove one candidate cue while keeping the object
([Chandrasegaran2022]: grayscale removes colour, to tell whether colour or texture is the cue).
A probe's effect is judged against a neutral perturbation of the same size, and by how much the
top-k relevant channels lose their activation compared with random channel sets (as
[Chandrasegaran2022] compare the activations of the relevant channels on original and
grey-scaled images).

Every probe maps float images N x 3 x H x W in [0, 1] to images of the same shape in [0, 1]:

| name | cue removed |
| --- | --- |
| `grayscale` | colour (BT.601 luminance in every channel) |
| `blur` | fine texture, high frequencies (Gaussian low-pass, `sigma` pixels) |
| `high_pass_removal` | spatial frequencies above `cutoff` cycles/pixel (ideal FFT low-pass) |
| `high_pass_only` | everything but the frequencies above `cutoff` and the mean (FFT high-pass) |
| `jpeg` | compression-sensitive detail (JPEG re-compression at `quality`, Pillow) |
| `border_mask` | a frame of `width` (share of each side) filled with the image mean or `fill` |
| `brightness_contrast` | global brightness and contrast (each image to `mean`, `std`) |
| `patch_occlusion` | one cell of a `grid` x `grid` partition (the occlusion scan tries all) |

Probes are extensions (`base.PROBES`, entry point group `relevance_auditor.probes`; README,
"Extending the auditor", has a worked example): a probe is a frozen dataclass subclassing
`Probe` whose fields are its parameters (each with a default), registered under its `name`.
A config lists it like any built-in: `probes: {names: [grayscale, {name: invert, strength:
0.5}]}`. `rng` is a `torch.Generator` the caller seeds from the config; probes that draw
nothing ignore it.

Modules: `base` (the `Probe` class and the registry), `transforms` (the built-in transforms),
`occlusion` (the patch-occlusion grid and its map), `neutral` (each probe's control: a donor's change transplanted),
`effect` (a probe's effect on logits and on channel activations).
"""

from auditor.checks.probes import occlusion, transforms  # noqa: F401 -- the built-ins register on import
