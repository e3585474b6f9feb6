"""Student code autograded in a sandbox, on the instructor's side (the grader account's lab).

- :mod:`.provisioner`: the ``ananke-sandbox`` jupyter_client kernel provisioner.
- :mod:`.bubblewrap`: the bubblewrap command line and the check that it works here.
- :mod:`.execute`: nbgrader's executor using the provisioner, set in the labs' nbgrader
  config.
- :mod:`.systemd`: the lab's side of the systemd backend (asks the broker for a kernel).
- :mod:`.broker`: the root service that starts kernels as transient units; it runs from
  ``ananke-sandbox-broker.socket``, never in a lab.

Imported inside the labs by nbgrader; nothing here imports the hub's modules.
"""

EXECUTE_CLASS = "ananke_hub.lab.sandbox.execute.SandboxedExecute"
