"""Worker of the 2-rank gloo test in test_entropy.py (a plain module so that spawned processes can import it)."""

from __future__ import annotations

import torch
import torch.distributed as dist

from open_magvit2.quantize import LFQ, entropy_terms


def run(rank: int, world: int, init_file: str, zs: list[torch.Tensor], temperature: float, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        z = zs[rank].clone().requires_grad_(True)
        synced = entropy_terms(z, temperature=temperature, sync=True)
        synced.codebook_entropy.backward()
        zg = zs[rank].double().requires_grad_(True)  # grouped H_c (groups of 3 bits, float64): one all-reduce
        grouped = entropy_terms(zg, temperature=temperature, sync=True, group_bits=3)
        grouped.codebook_entropy.backward()
        local = entropy_terms(zs[rank], temperature=temperature, sync=False)
        lfq = LFQ(bits=z.shape[1], temperature=temperature).train()
        lfq_out = lfq(zs[rank], sync_codebook=True)
        if rank == 0:  # a train-mode call that only this rank makes (logging, a picture) must not wait on rank 1
            lone = lfq(zs[rank])
        dist.barrier()
        result = {
            "h_c": synced.codebook_entropy.detach(),
            "h_s": synced.per_sample_entropy.detach(),
            "grad": z.grad,
            "grouped_h_c": grouped.codebook_entropy.detach(),
            "grouped_grad": zg.grad,
            "local_h_c": local.codebook_entropy,
            "lfq_h_c": lfq_out.codebook_entropy.detach(),
            "lone_h_c": lone.codebook_entropy.detach() if rank == 0 else None,
        }
        torch.save(result, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()
