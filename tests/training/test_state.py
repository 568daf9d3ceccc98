"""`training/state.py`: the run state round-trips through its dict; what counts as a better value."""
import math

from latentqa.training.state import RunState


def test_the_run_state_round_trips_through_its_dict():
    state = RunState(epoch=2, step=40, batch_in_epoch=3, best_value=0.5, best_step=30, evaluated_step=40,
                     nonfinite_streak=1, nonfinite_total=4)
    restored = RunState()
    restored.load_state_dict(state.state_dict())
    assert restored == state


def test_a_value_improves_on_the_best_in_the_metric_s_direction_and_nan_never_does():
    state = RunState()
    assert state.improves(0.1, higher_is_better=True) and not state.improves(math.nan, higher_is_better=True)
    state.best_value = 0.5
    assert state.improves(0.6, True) and not state.improves(0.5, True) and not state.improves(0.4, True)
    assert state.improves(0.4, False) and not state.improves(0.6, False)
