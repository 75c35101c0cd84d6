"""What the SMC and paths labs send to the trajectory player: a lineage-closed subset of
particles with their genealogy, trajectories from noise to data, and a bounded size."""

import jax
import jax.numpy as jnp
import numpy as np
import panel as pn
import pytest
from posteriorlab_widgets import pack_trajectory
from posteriorlab_widgets.trajectory import message_bytes

from posteriorlab.core.smc import filtering, models
from posteriorlab.dashboards import paths as paths_dashboard
from posteriorlab.dashboards import smc as smc_dashboard
from posteriorlab.labs import paths as paths_lab
from posteriorlab.labs import smc as smc_lab


@pytest.fixture(scope="module")
def filter_ancestors():
    """The genealogy of a real filter that resamples at some steps and not others."""
    model = models.linear_gaussian_1d(rho=0.9, sigma_x=1.0, sigma_y=1.0)
    _, observations = model.simulate(jax.random.key(3), 30)
    info = filtering.run(jax.random.key(4), model, observations, 40, ess_threshold=0.5)
    ancestors = np.asarray(info.ancestors)
    resampled = np.asarray(info.resampled)
    assert 0 < resampled.sum() < resampled.size - 1  # both kinds of step occur
    return ancestors, resampled


@pytest.mark.parametrize("size", [1, 7, 25])
def test_every_shown_particle_has_its_parent_shown(filter_ancestors, size):
    ancestors, resampled = filter_ancestors
    shown, shown_ancestors = map(
        np.asarray, smc_lab.animated_subset(jax.random.key(0), jnp.asarray(ancestors), size)
    )
    assert shown.shape == shown_ancestors.shape == (ancestors.shape[0], size)
    for t in range(1, ancestors.shape[0]):
        assert np.all(np.diff(shown[t]) > 0)  # distinct, sorted
        # The parent drawn for shown particle j is the filter's parent of that particle.
        np.testing.assert_array_equal(shown[t - 1][shown_ancestors[t]], ancestors[t][shown[t]])
        if not resampled[t]:
            np.testing.assert_array_equal(shown_ancestors[t], np.arange(size))


def test_showing_all_particles_keeps_the_filters_genealogy(filter_ancestors):
    ancestors, _ = filter_ancestors
    size = ancestors.shape[1]
    shown, shown_ancestors = smc_lab.animated_subset(jax.random.key(1), ancestors, size)
    np.testing.assert_array_equal(shown, np.broadcast_to(np.arange(size), ancestors.shape))
    np.testing.assert_array_equal(shown_ancestors[1:], ancestors[1:])


def test_the_last_steps_subset_is_uniform():
    """Each of N particles is in the last step's subset of M with probability M/N.

    Over R keys the count is Binomial(R, M/N); z = 4.5 per particle bounds the chance of a
    false failure over all N particles by N · 2Φ(-4.5) ≈ 1.4e-4.
    """
    num_particles, size, replicates, z = 20, 5, 2000, 4.5
    ancestors = jnp.broadcast_to(jnp.arange(num_particles), (3, num_particles))
    keys = jax.random.split(jax.random.key(2), replicates)
    shown = jax.vmap(lambda k: smc_lab.animated_subset(k, ancestors, size)[0][-1])(keys)
    counts = np.bincount(np.asarray(shown).ravel(), minlength=num_particles)
    p = size / num_particles
    tolerance = z * np.sqrt(replicates * p * (1 - p))
    assert np.all(np.abs(counts - replicates * p) < tolerance), counts


@pytest.mark.parametrize(
    ("particles", "steps", "expected"),
    [(1000, 100, 1000), (10_000, 100, 2000), (200_000, 500, 400), (10**6, 10**6, 1)],
)
def test_the_animation_cap_bounds_particles_times_steps(particles, steps, expected):
    count = smc_lab.animated_particle_count(particles, steps)
    assert count == expected
    assert count == 1 or count * steps <= smc_lab.ANIMATED_PARTICLE_STEPS


@pytest.fixture(scope="module")
def smc_results():
    small = dict(num_particles=64, num_steps=20, replicates=20)
    return {
        model: smc_lab.SMCLab(model=model, **small).result
        for model in ("linear_gaussian_1d", "linear_gaussian_2d")
    }


def test_smc_lab_animates_every_particle_at_small_sizes(smc_results):
    result = smc_results["linear_gaussian_1d"]
    assert result.animated_particles.shape == (20, 64, 1)
    np.testing.assert_allclose(result.animated_weights.sum(axis=1), 1.0, rtol=1e-9)
    kept = result.animated_ancestors[~result.resampled]
    np.testing.assert_array_equal(kept, np.broadcast_to(np.arange(64), kept.shape))


def test_a_1d_state_is_animated_against_time(smc_results):
    result = smc_results["linear_gaussian_1d"]
    frames = smc_dashboard.animation_frames(result)
    positions = frames["positions"]
    steps = np.broadcast_to(np.arange(20.0)[:, None], (20, 64))
    np.testing.assert_array_equal(positions[..., 0], steps)
    np.testing.assert_array_equal(positions[..., 1], result.animated_particles[..., 0])
    assert (frames["x_label"], frames["y_label"]) == ("time step t", "x_t")
    assert not frames["equal_aspect"]  # time and state have different units
    assert "time step t across" in smc_dashboard.animation_caption(result)
    assert "all N = 64 particles" in smc_dashboard.animation_caption(result)


def test_a_2d_state_is_animated_as_it_is(smc_results):
    result = smc_results["linear_gaussian_2d"]
    frames = smc_dashboard.animation_frames(result)
    np.testing.assert_array_equal(frames["positions"], result.animated_particles)
    assert frames["equal_aspect"]
    assert len(pack_trajectory(**_packing(frames))) == message_bytes(20, 64, True, True, False)


def test_every_lab_message_is_a_few_megabytes():
    """SMC: positions, weights and ancestors; paths: positions and times."""
    steps, particles = smc_lab.SMCLab.num_steps, smc_lab.SMCLab.num_particles
    count = smc_lab.animated_particle_count(particles, steps)
    assert message_bytes(steps, count, True, True, False) < 2 * 2**20  # the defaults
    assert message_bytes(1, smc_lab.ANIMATED_PARTICLE_STEPS, True, True, False) < 4 * 2**20
    steps, trajectories = paths_lab.PathsLab.num_steps, paths_lab.PathsLab.num_trajectories
    count = paths_lab.animated_trajectory_count(trajectories, steps)
    assert message_bytes(steps + 1, count, False, False, True) < 2**20  # the defaults
    largest = paths_lab.ANIMATED_TRAJECTORY_POINTS
    assert message_bytes(1, largest, False, False, True) < 4 * 2**20


@pytest.fixture(scope="module")
def paths_result():
    return paths_lab.PathsLab(num_trajectories=300, num_steps=20).result


def test_paths_lab_animates_the_same_trajectories_it_plots(paths_result):
    animated = paths_result.animated_trajectories
    assert animated.shape == (21, 300, 2)
    assert animated.dtype == np.float32
    shown = paths_result.trajectories.shape[1]
    np.testing.assert_array_equal(animated[:, :shown], paths_result.trajectories)
    np.testing.assert_array_equal(animated[-1], paths_result.endpoints)


def test_paths_animation_plays_in_the_plots_window(paths_result):
    frames = paths_dashboard.animation_frames(paths_result)
    read_bounds = np.frombuffer(pack_trajectory(**_packing(frames)), "<f4", 4, 16)
    grid = paths_result.grid_x[[0, -1]].tolist() + paths_result.grid_y[[0, -1]].tolist()
    np.testing.assert_allclose(read_bounds, grid, rtol=1e-6)
    np.testing.assert_array_equal(frames["times"], paths_result.times)
    assert "all 300 trajectories over 20 steps" in paths_dashboard.animation_caption(paths_result)


def test_the_animation_is_sent_only_while_its_tab_is_open():
    lab = paths_lab.PathsLab(num_trajectories=100, num_steps=10)
    dashboard = paths_dashboard.PathsDashboard(lab=lab)
    player = dashboard.main.select(lambda o: getattr(o, "name", None) == "animation")[0]
    tabs = dashboard.main.select(pn.Tabs)[0]
    sent = []
    player.param.watch(lambda event: sent.append(event.new), "trajectory")
    lab.seed = 3
    assert sent == []  # the Trajectories tab is open
    tabs.active = tabs._names.index("Animation")
    assert sent == [pack_trajectory(**_packing(paths_dashboard.animation_frames(lab.result)))]
    tabs.active = 0
    lab.seed = 4
    assert len(sent) == 1


def test_moving_the_time_slider_neither_resends_nor_restarts_the_animation():
    lab = paths_lab.PathsLab(num_trajectories=100, num_steps=10)
    dashboard = paths_dashboard.PathsDashboard(lab=lab)
    player = dashboard.main.select(lambda o: getattr(o, "name", None) == "animation")[0]
    tabs = dashboard.main.select(pn.Tabs)[0]
    tabs.active = tabs._names.index("Animation")
    sent = []
    player.param.watch(lambda event: sent.append(event.new), "trajectory")
    lab.time = 0.3  # a new result with the same trajectories
    assert sent == []
    lab.seed = 4
    assert len(sent) == 1
    assert sent[0] == pack_trajectory(**_packing(paths_dashboard.animation_frames(lab.result)))


@pytest.mark.parametrize(
    ("trajectories", "steps", "expected"), [(1000, 50, 1000), (10_000, 200, 1243), (100, 1000, 100)]
)
def test_paths_animation_cap(trajectories, steps, expected):
    count = paths_lab.animated_trajectory_count(trajectories, steps)
    assert count == expected
    assert count * (steps + 1) <= paths_lab.ANIMATED_TRAJECTORY_POINTS


def _packing(frames: dict) -> dict:
    """The arguments of pack_trajectory among those of TrajectoryPlayer.load."""
    names = ("positions", "weights", "ancestors", "times", "bounds")
    return {name: frames[name] for name in names if name in frames}
