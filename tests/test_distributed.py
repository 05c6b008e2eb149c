"""Data-parallel training: two CPU processes (gloo) step the same weights."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from conftest import TINY_RECIPE


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_main(rank: int, world_size: int, port: int, data_dir: str, out_dir: str) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1"
    )
    torch.set_num_threads(1)
    import torch.distributed as dist
    from safetensors.torch import save_file

    from fetometry.data.hc18 import load_hc18
    from fetometry.training.config import TrainConfig
    from fetometry.training.trainer import Trainer

    # Ranks differ in their seed ON PURPOSE: the trainer must still start them from
    # rank 0's weights and keep them identical.
    recipe = {**TINY_RECIPE, "epochs": 1, "max_steps": 2, "seed": 0, "batch_size": 4}
    trainer = Trainer(TrainConfig.from_dict(recipe), os.path.join(out_dir, "run"), progress=False)
    trainer.fit(load_hc18(data_dir))
    state = {k: v.detach().contiguous().clone() for k, v in trainer.model.state_dict().items()}
    save_file(state, os.path.join(out_dir, f"rank{rank}.safetensors"))
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_step_the_same_weights(phantom_hc18, tmp_path):
    from safetensors.torch import load_file

    from fetometry.models import create_model

    mp.spawn(_rank_main, args=(2, _free_port(), str(phantom_hc18), str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert rank0.keys() == rank1.keys()
    for name in rank0:
        torch.testing.assert_close(rank0[name], rank1[name], rtol=0, atol=0, msg=f"ranks differ in {name}")
    torch.manual_seed(0)
    initial = create_model("attention-unet", "compact").state_dict()
    changed = [n for n, v in initial.items() if v.is_floating_point() and not torch.equal(v, rank0[n])]
    assert len(changed) > len(initial) // 2  # they really trained
    assert (tmp_path / "run" / "log.csv").is_file()  # rank 0 wrote the run's files
    assert not (tmp_path / "run" / "model").exists() or (tmp_path / "run" / "model" / "config.json").is_file()


def test_a_single_process_ignores_distribution(monkeypatch):
    from fetometry.training.distributed import DistributedContext

    for key in ("RANK", "WORLD_SIZE", "SLURM_NTASKS", "SLURM_PROCID"):
        monkeypatch.delenv(key, raising=False)
    context = DistributedContext.from_environment()
    assert not context.enabled and context.is_main
    assert context.shard([3, 1, 2]) == [3, 1, 2]
    assert DistributedContext(1, 2).shard([0, 1, 2, 3, 4]) == [1, 3]
