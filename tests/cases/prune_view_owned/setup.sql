CREATE TABLE sales (id int PRIMARY KEY, day date NOT NULL, amount int NOT NULL);
INSERT INTO sales SELECT g, date '2026-01-01' + g % 60, g % 97 FROM generate_series(1, 3000) g;
