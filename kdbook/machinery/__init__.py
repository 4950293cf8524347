"""The book machinery: what runs the notebooks and writes a run folder (not the KD library).

- :mod:`kdbook.machinery.runner`: ``kdbook book`` (:func:`~kdbook.machinery.runner.run_book`).
- :mod:`kdbook.machinery.selection`: which notebooks, which parameters, checked first.
- :mod:`kdbook.machinery.execute`: one notebook through papermill.
- :mod:`kdbook.machinery.kernel`: the kernel client that does not miss a reply.
- :mod:`kdbook.machinery.errors`: every failure as one :class:`BookError` line.
- :mod:`kdbook.machinery.sweep`: ``kdbook sweep`` (a grid of runs, shards, merging).
- :mod:`kdbook.machinery.html`: the book as static HTML.
- :mod:`kdbook.machinery.installed`: the installed book (``book_dir``, copying notebooks).
- :mod:`kdbook.machinery.runfolder`: one writer per run folder.

Beside them, at the top of the package because notebooks import them: :mod:`kdbook.report`
(metrics, results.json, summary.md), :mod:`kdbook.environment` (the machine check of
``kdbook doctor``), and ``config_from`` in :mod:`kdbook.config` (a notebook's parameters).

This ``__init__`` re-exports nothing: a notebook's ``config_from`` reads
:mod:`kdbook.machinery.runfolder` alone, without loading papermill.
"""
