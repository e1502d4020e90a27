from report_fakes import sample_runs, write_metrics

__all__ = ["sample_runs", "write_metrics"]
