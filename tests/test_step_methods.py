"""kolen_pollack, drtp and mezo: each update equals the one computed by hand on a tiny GPT;
mezo builds no autograd graph and costs two forwards per direction; all three are in the zoo preset."""
import pytest
import torch
import torch.nn.functional as F

from beyondbp.config import MethodConfig, ModelConfig, RunConfig
from beyondbp.methods.base import StepInfo
from beyondbp.methods.registry import build_method
from beyondbp.model.build import build_model
from beyondbp.train.method_step import build_optimizer, compute_update, finish_update, measured_flops_per_token, set_rates


def tiny_gpt(n_layer=2, seed=0):
    torch.manual_seed(seed)
    return build_model(ModelConfig(kind="gpt", n_layer=n_layer, d_model=8, n_head=2, context=4, vocab_size=11))


def batch(seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 11, (3, 4), generator=gen), torch.randint(0, 11, (3, 4), generator=gen)


def one_step(method, cfg, x, y, step=0):
    info = StepInfo(step, cfg.train.lr)
    optimizer = build_optimizer(cfg, method)
    set_rates(optimizer, info.lr)
    compute_update(method, method, x, y, cfg, torch.device("cpu"), 1, info)
    finish_update(method, optimizer, cfg.train.grad_clip, info)
    return optimizer


@pytest.mark.parametrize("decay_scale", [1.0, 0.0])
def test_kolen_pollack_moves_each_feedback_matrix_by_its_weight_s_update(decay_scale):
    method = build_method(tiny_gpt(), MethodConfig("kolen_pollack", feedback_decay=decay_scale))
    cfg = RunConfig()
    cfg.train.lr, cfg.train.weight_decay = 0.05, 0.3
    pairs = [(w.detach().clone(), b.detach().clone()) for w, b in method.pairs()]
    one_step(method, cfg, *batch())
    lr, wd = cfg.train.lr, cfg.train.weight_decay
    for (w0, b0), (w1, b1) in zip(pairs, method.pairs()):
        # AdamW: W1 = W0 (1 - lr wd) - lr u and B1 = B0 (1 - lr wd s) - lr u with the same u
        u = (w0 * (1 - lr * wd) - w1) / lr
        torch.testing.assert_close(b1, b0 * (1 - lr * wd * decay_scale) - lr * u, rtol=1e-5, atol=1e-6)
        assert not torch.equal(b1, b0)
    assert not any(b.requires_grad for _, b in method.pairs())  # outside clipping and DDP's reduction


def test_kolen_pollack_logs_the_feedback_alignment_it_has():
    method = build_method(tiny_gpt(), MethodConfig("kolen_pollack"))
    cfg = RunConfig()
    one_step(method, cfg, *batch())
    (total, count), = method.take_logged().values()
    cosines = [F.cosine_similarity(w.flatten(), b.flatten(), dim=0) for w, b in method.pairs()]
    assert count == 1 and float(total) == pytest.approx(float(torch.stack(cosines).mean().detach()), abs=1e-6)


def test_drtp_teaches_each_hidden_block_the_projected_target_and_the_top_by_backprop():
    model = tiny_gpt(n_layer=3)
    method = build_method(model, MethodConfig("drtp", target_point="output"))
    x, y = batch()
    loss, objective = method(x, y)
    objective.backward()
    signal = -method.projection[y] / y.numel()  # [3, 4, 8]: B's row of each target, negated
    # the embedding output receives the signal: wpe's gradient is its sum over the batch, wte's the
    # sum over the positions holding each token
    torch.testing.assert_close(model.wpe.weight.grad, signal.sum(0), rtol=1e-5, atol=1e-7)
    want_wte = torch.zeros_like(model.wte.weight).index_add_(0, x.flatten(), signal.reshape(-1, 8))
    torch.testing.assert_close(model.wte.weight.grad, want_wte, rtol=1e-5, atol=1e-7)
    clone = tiny_gpt(n_layer=3)
    with torch.no_grad():
        h0 = clone.embed(x)
        h1 = clone.blocks[0](h0)
        h2 = clone.blocks[1](h1)
    for i, (inp, out_grad) in enumerate([(h0, signal), (h1, signal)]):  # blocks 0 and 1: <block(h), signal>
        (clone.blocks[i](inp) * out_grad).sum().backward()
        for (name, p), q in zip(model.blocks[i].named_parameters(), clone.blocks[i].parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7, msg=name)
    clone.loss_fn(clone.head(clone.blocks[2](h2)), y).backward()  # block 2 and the head: the loss
    for p, q in zip(model.blocks[2].parameters(), clone.blocks[2].parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(model.lm_head.weight.grad, clone.lm_head.weight.grad, rtol=1e-5, atol=1e-7)
    assert loss.item() == pytest.approx(model(x, y)[1].item())


def test_mezo_update_is_the_two_point_difference_along_the_regenerated_direction():
    model = tiny_gpt()
    method = build_method(model, MethodConfig("mezo", epsilon=1e-2))
    cfg = RunConfig()
    x, y = batch()
    info = StepInfo(7, 0.0)
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    directions = {n: z.clone() for n, _, z in method.directions(info, 0)}
    loss = compute_update(method, method, x, y, cfg, torch.device("cpu"), 1, info)
    losses = []
    for sign in (1.0, -1.0):  # by hand: move a copy's weights in place, measure, as MeZO's paper does
        clone = tiny_gpt()
        with torch.no_grad():
            for n, p in clone.named_parameters():
                p.add_(sign * 1e-2 * directions[n])
            losses.append(clone(x, y)[1].item())
    slope = (losses[0] - losses[1]) / 2e-2
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, slope * directions[n], rtol=1e-4, atol=1e-6, msg=n)
        assert torch.equal(p.detach(), weights[n])  # the weights themselves are untouched
    assert loss.item() == pytest.approx(sum(losses) / 2, rel=1e-6)
    again = {n: z for n, _, z in method.directions(info, 0)}
    other = {n: z for n, _, z in method.directions(StepInfo(8, 0.0), 0)}
    assert all(torch.equal(again[n], directions[n]) for n in directions)  # regenerated, not stored
    assert not torch.equal(other["wte.weight"], directions["wte.weight"])


def test_mezo_builds_no_autograd_graph_where_backprop_does():
    model = tiny_gpt()
    x, y = batch()
    saved = []

    def count_saved(method_call):
        saved.clear()
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(1) or t,
                                                                           lambda t: t):
            loss = method_call()
        return len(saved), loss

    mezo = build_method(model, MethodConfig("mezo"))
    n_saved, (loss, updates) = count_saved(lambda: mezo.update_without_backward(x, y, StepInfo(0, 0.0)))
    assert n_saved == 0 and loss.grad_fn is None and not any(u.requires_grad for _, u in updates)
    bp = build_method(tiny_gpt(), MethodConfig("bp"))
    assert count_saved(lambda: bp(x, y))[0] > 0  # the same counter sees a backward's saved tensors


@pytest.mark.parametrize("k", [1, 3])
def test_mezo_costs_two_forwards_per_direction_counted_and_measured(k):
    method = build_method(tiny_gpt(), MethodConfig("mezo", perturbations=k))
    forward = method.model.forward_flops_per_token()
    declared = method.compute_per_token()
    assert declared["exact"] == 2 * k * forward
    assert declared["paper"] == 2 * k * 2 * method.model.n_params_nonembedding()
    x, y = batch()
    assert measured_flops_per_token(method, x, y, RunConfig(), torch.device("cpu")) == 2 * k * forward


def test_the_zoo_preset_holds_the_three_new_methods():
    from beyondbp.study.plan import plan_study
    from beyondbp.study.spec import load_spec
    runs = plan_study(load_spec(preset="zoo")).runs
    for name, rates in (("kolen_pollack", {1e-2}), ("drtp", {3e-3, 1e-2}), ("mezo", {1e-2})):
        assert {r.lr for r in runs if r.method == name} == rates
        assert len([r for r in runs if r.method == name]) == 4 * len(rates)  # four sizes each
