"""A large model: torchvision's ResNet-18, its 41 layers heard as a chord of 11 groups.

    python examples/resnet18.py [OUT.wav] [--steps 30] [--live]

ResNet-18 has 41 modules with parameters: one 10 ms tone each would make a
step last half a second. sonify groups them automatically by module prefix
(``conv1``, ``bn1``, ``layer1.0`` ... ``layer4.1``, ``fc``: 11 groups), plays
each step as a chord (all groups at once, each at its own pitch) and spreads
the groups from left to right across the stereo field. Random images stand
in for a dataset, so it runs anywhere.
"""

from __future__ import annotations

import argparse

import torch
import torchvision
from torch import nn

import sonify


def main(out: str = "audio_out/resnet18.wav", steps: int = 30, live: bool = False) -> sonify.Sonifier:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    images, labels = torch.randn(16, 3, 64, 64), torch.randint(0, 10, (16,))
    sound = sonify.SoundSettings(mode="chord", stereo=True, tone_duration=0.05)
    with sonify.Sonifier(model, optimizer, out=out, sound=sound, live=live) as son:  # group="auto" by default
        for _ in range(steps):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(images), labels).backward()
            optimizer.step()
    print(f"{son.steps} steps, {len(son.layers)} voices: {', '.join(son.layer_names)}")
    return son


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="audio_out/resnet18.wav")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--live", action="store_true", help="also play through the default sound card")
    args = parser.parse_args()
    main(args.out, args.steps, args.live)
