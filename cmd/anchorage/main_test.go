package main

import (
	"testing"

	"github.com/anchorage-pin/anchorage/adapters/postgres/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }
