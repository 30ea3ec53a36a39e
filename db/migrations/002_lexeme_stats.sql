-- How many chunks each full-text lexeme occurs in, refreshed after every sync that changed something.
-- The keyword leg of hybrid search keeps only a question's distinctive words (ones in at most a few percent
-- of chunks): ranking every chunk that contains "database" took 357 ms p95 at 100k chunks (bench/search.py),
-- and such common words carried no signal the vector leg lacks.
CREATE TABLE lexeme_stats (
    lexeme text PRIMARY KEY,
    ndoc   integer NOT NULL
);

CREATE TABLE search_stats (
    id           boolean PRIMARY KEY DEFAULT true CHECK (id),
    chunks       integer     NOT NULL,
    refreshed_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO lexeme_stats (lexeme, ndoc) SELECT word, ndoc FROM ts_stat('SELECT tsv FROM chunks');
INSERT INTO search_stats (chunks) SELECT count(*) FROM chunks;
