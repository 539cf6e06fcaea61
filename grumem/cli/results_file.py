"""A JSON-lines results file that grows as documents finish (each record flushed at once), so that a batch killed
at any moment resumes where it stopped: a record is keyed by its batch line's number and content hash."""
import json
import os


class ResultsFile:
    def __init__(self, path: str, resume: bool):
        """Reads what a previous run finished (with resume) or checks that there is nothing to overwrite."""
        self.path, self.file = path, None
        self.kept = self._finished_records() if resume else []
        if not resume and os.path.exists(path) and os.path.getsize(path) > 0:
            raise ValueError(f"--out {path} already holds results: pass --resume to continue them, or remove it")
        self.done = {(r["line"], r["hash"]) for r in self.kept}

    def _finished_records(self) -> list[dict]:
        """The records of lines that got an outcome; aborted ones and a line cut short by a kill are dropped."""
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"--out {self.path}: cannot read it to resume ({e})") from None
        records = []
        for number, line in enumerate(text.split("\n")[:-1], 1):  # after the last newline: a record cut short
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict) or not {"line", "hash", "status"} <= set(record):
                raise ValueError(f"--out {self.path}: line {number} is not a grumem ask record")
            if record["status"] != "aborted":
                records.append(record)
        return records

    def open(self, keys: set[tuple[int, str]]) -> None:
        """Rewrites the kept records of these (line, hash) keys, atomically (a record of a line whose text changed
        since is dropped and the line read again), then appends new ones."""
        self.kept = [r for r in self.kept if (r["line"], r["hash"]) in keys]
        self.done = {(r["line"], r["hash"]) for r in self.kept}
        staging = f"{self.path}.tmp"
        with open(staging, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in self.kept)
        os.replace(staging, self.path)
        self.file = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
