"""What every data listener shares: its key and its state, set in one place (``_set_state``)."""

from __future__ import annotations

import structlog

from runtime.core.listener_state import ListenerState

log = structlog.get_logger(__name__)


class ListenerBase:
    key: str
    type: str
    _state: ListenerState = ListenerState.STOPPED

    @property
    def state(self) -> ListenerState:
        return self._state

    def _set_state(self, state: ListenerState) -> None:
        """The one writer of a listener's state (``GET /status``, ``/ready``); logs each change at debug."""
        old = self._state
        if state is not old:
            self._state = state
            log.debug("listener_state_changed", listener=self.key, old=old.value, new=state.value)
