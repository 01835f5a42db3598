CREATE TABLE appointments (id int PRIMARY KEY, barber_id int, status text, created_at timestamp);
INSERT INTO appointments SELECT g, g % 20, (ARRAY['confirmed','pending','done'])[1 + g % 3], now() FROM generate_series(1, 500) g;
CREATE INDEX idx_appt_barber_status ON appointments (barber_id, status) WHERE status = ANY (ARRAY['confirmed'::text, 'pending'::text]);
