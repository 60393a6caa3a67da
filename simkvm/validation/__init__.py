"""How right are the predictions? Real migrations on the testbed next to their predictions.

One module per step of a validation study:

* :mod:`.spec`: the campaign YAML (scenarios, roles, repeats) -> :class:`~.spec.Campaign`;
* :mod:`.store`: the output directory (one file set per run, ``runs.csv``, ``rounds.csv``);
* :mod:`.runner`: one run (define the guest, predict, migrate, check) and the campaign loop;
* :mod:`.report`: the error figures over the held-out runs;
* :mod:`.calibrate`: host constants fitted on the calibration runs -> a host profile;
* :mod:`.search`: the calibration's objective terms and its coordinate search.
"""
