"""A small transformer built from torch.nn, grouped per encoder block.

    python examples/transformer.py [OUT.wav] [--steps 60] [--live]

A 6-block ``nn.TransformerEncoder`` has 36 modules with parameters (attention,
its output projection, two linears and two norms per block). Grouping by a
regular expression makes one voice per block (``layers.0`` ... ``layers.5``)
plus the embedding and the head; the group's norm is the L2 norm over all its
parameters' gradients. Halfway through, the learning rate jumps: listen to
the deep blocks rise first.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import sonify


class TinyTransformer(nn.Module):
    def __init__(self, vocabulary: int = 50, width: int = 64, blocks: int = 6) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocabulary, width)
        block = nn.TransformerEncoderLayer(width, nhead=4, dim_feedforward=128, batch_first=True)
        self.encoder = nn.TransformerEncoder(block, blocks, enable_nested_tensor=False)
        self.head = nn.Linear(width, vocabulary)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens)))


def main(out: str = "audio_out/transformer.wav", steps: int = 60, live: bool = False) -> sonify.Sonifier:
    torch.manual_seed(0)
    model = TinyTransformer()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokens = torch.randint(0, 50, (8, 24))
    with sonify.Sonifier(model, optimizer, out=out, group=r"^encoder\.layers\.\d+", live=live) as son:
        for step in range(steps):
            if step == steps // 2:
                optimizer.param_groups[0]["lr"] = 0.5
            optimizer.zero_grad()
            logits = model(tokens[:, :-1])
            nn.functional.cross_entropy(logits.reshape(-1, 50), tokens[:, 1:].reshape(-1)).backward()
            optimizer.step()
    print(f"{son.steps} steps, {len(son.layers)} voices: {', '.join(son.layer_names)}")
    return son


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="audio_out/transformer.wav")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--live", action="store_true", help="also play through the default sound card")
    args = parser.parse_args()
    main(args.out, args.steps, args.live)
