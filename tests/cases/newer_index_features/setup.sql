CREATE TABLE accounts (id int PRIMARY KEY, tenant_id int NOT NULL, slug text, plan text, balance numeric);
INSERT INTO accounts SELECT g, g % 40, 'slug-' || g, (ARRAY['free','pro'])[1 + g % 2], g FROM generate_series(1, 1500) g;
