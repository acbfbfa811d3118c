import torch

from idhhpc.train.sampler import make_sampler

LABELS = [1] * 20 + [0] * 80


def test_sampler_balances_classes_in_expectation():
    draws = [i for epoch in range(40) for i in make_sampler(LABELS, seed=0, epoch=epoch)]
    mutant_share = sum(LABELS[i] for i in draws) / len(draws)
    assert len(draws) == 4000
    assert abs(mutant_share - 0.5) < 0.03


def test_sampler_order_is_a_function_of_seed_and_epoch():
    torch.manual_seed(123)
    first = list(make_sampler(LABELS, seed=5, epoch=3))
    torch.manual_seed(999)
    again = list(make_sampler(LABELS, seed=5, epoch=3))
    assert first == again
    assert first != list(make_sampler(LABELS, seed=5, epoch=4))
    assert first != list(make_sampler(LABELS, seed=6, epoch=3))


def test_sampler_does_not_touch_global_rng():
    state = torch.get_rng_state()
    list(make_sampler(LABELS, seed=0, epoch=0))
    assert torch.equal(state, torch.get_rng_state())


def test_unbalanced_sampling_draws_classes_at_their_frequency():
    from idhhpc.train.sampler import make_sampler

    labels = [0] * 90 + [1] * 10
    balanced = [labels[i] for i in make_sampler(labels, seed=0, epoch=0, num_samples=4000)]
    plain = [labels[i] for i in make_sampler(labels, seed=0, epoch=0, num_samples=4000, balanced=False)]
    assert abs(sum(balanced) / 4000 - 0.5) < 0.05 and abs(sum(plain) / 4000 - 0.1) < 0.03
