"""Imported by the Ray executor's test workers (runtime_env worker_process_setup_hook
"tests.ray_hooks.register") and by the test itself: a Keras callback that misbehaves the way the
test needs. Only Keras and the standard library here: the workers import nothing else of tests/."""

import os
import signal

import keras


def register() -> None:
    """Runs in each Ray worker at start-up; importing this module registered the callback."""


@keras.saving.register_keras_serializable(package="kexp_tests")
class KillOnce(keras.callbacks.Callback):
    """At the first epoch end: writes a stray file into the working directory (as a careless library
    would), then, in the one process that creates `marker` first, kills its own process (SIGKILL, as the
    kernel's OOM killer would)."""

    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker

    def get_config(self):
        return {"marker": self.marker}

    def on_epoch_end(self, epoch, logs=None):
        if epoch:
            return
        with open(f"stray-{os.getpid()}.txt", "w") as file:  # relative: lands in the working directory
            file.write("written where the task ran\n")
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        os.kill(os.getpid(), signal.SIGKILL)
