CREATE TABLE appointments (id int PRIMARY KEY, barber_id int, status text, created_at timestamp);
INSERT INTO appointments SELECT g, g % 20, (ARRAY['confirmed','pending','done'])[1 + g % 3], now() FROM generate_series(1, 500) g;
