package rules

import (
	"fmt"
	"strings"

	"go.starlark.net/resolve"
	"go.starlark.net/starlark"
	"go.starlark.net/syntax"
)

// guardSyntax rewrites a parsed file in place so that the operators and
// methods that can allocate in bulk call the guards (see guard.go). It
// must run before the file is resolved. A script that uses a reserved
// name gets resolver errors, one per use.
func guardSyntax(f *syntax.File) error {
	if errs := reservedNames(f); len(errs) > 0 {
		return errs
	}
	f.Stmts = guardStmts(f.Stmts)
	return nil
}

// guardedProgram is starlark.FileProgram for a parsed file, guarded.
func guardedProgram(f *syntax.File, isPredeclared func(string) bool) (*starlark.Program, error) {
	if err := guardSyntax(f); err != nil {
		return nil, err
	}
	return starlark.FileProgram(f, isPredeclared)
}

// dropGuardNames removes the guards' own globals (the variable of the
// loops guarding complex targets at top level) from a file's globals.
func dropGuardNames(globals starlark.StringDict) {
	for k := range globals {
		if strings.HasPrefix(k, guardPrefix) {
			delete(globals, k)
		}
	}
}

// reservedNames reports the names in f that start with guardPrefix.
func reservedNames(f *syntax.File) resolve.ErrorList {
	var errs resolve.ErrorList
	attrs := map[*syntax.Ident]bool{}
	syntax.Walk(f, func(n syntax.Node) bool {
		switch n := n.(type) {
		case *syntax.DotExpr:
			attrs[n.Name] = true // x._lp_y is only an attribute name
		case *syntax.Ident:
			if strings.HasPrefix(n.Name, guardPrefix) && !attrs[n] {
				errs = append(errs, resolve.Error{Pos: n.NamePos,
					Msg: fmt.Sprintf("%s: names starting with %s are reserved", n.Name, guardPrefix)})
			}
		}
		return true
	})
	return errs
}

func guardStmts(list []syntax.Stmt) []syntax.Stmt {
	for i, s := range list {
		list[i] = guardStmt(s)
	}
	return list
}

func guardStmt(s syntax.Stmt) syntax.Stmt {
	switch s := s.(type) {
	case *syntax.ExprStmt:
		s.X = guardExpr(s.X)
	case *syntax.AssignStmt:
		s.RHS = guardExpr(s.RHS)
		guardTarget(s.LHS)
		if s.Op != syntax.EQ {
			return guardAugmented(s)
		}
	case *syntax.DefStmt:
		guardParams(s.Params)
		s.Body = guardStmts(s.Body)
	case *syntax.ForStmt:
		guardTarget(s.Vars)
		s.X = guardExpr(s.X)
		s.Body = guardStmts(s.Body)
	case *syntax.WhileStmt:
		s.Cond = guardExpr(s.Cond)
		s.Body = guardStmts(s.Body)
	case *syntax.IfStmt:
		s.Cond = guardExpr(s.Cond)
		s.True = guardStmts(s.True)
		s.False = guardStmts(s.False)
	case *syntax.ReturnStmt:
		if s.Result != nil {
			s.Result = guardCall(guardReturn, s.Return, guardExpr(s.Result))
		}
	}
	return s
}

// guardTarget guards the expressions inside an assignment target, not
// the target itself.
func guardTarget(e syntax.Expr) {
	switch e := e.(type) {
	case *syntax.IndexExpr:
		e.X = guardExpr(e.X)
		e.Y = guardExpr(e.Y)
	case *syntax.DotExpr:
		e.X = guardExpr(e.X)
	case *syntax.ParenExpr:
		guardTarget(e.X)
	case *syntax.TupleExpr:
		for _, x := range e.List {
			guardTarget(x)
		}
	case *syntax.ListExpr:
		for _, x := range e.List {
			guardTarget(x)
		}
	}
}

// guardParams guards parameters' default values.
func guardParams(params []syntax.Expr) {
	for _, p := range params {
		if b, ok := p.(*syntax.BinaryExpr); ok && b.Op == syntax.EQ {
			b.Y = guardExpr(b.Y)
		}
	}
}

func guardExprs(list []syntax.Expr) {
	for i, x := range list {
		list[i] = guardExpr(x)
	}
}

func guardExpr(e syntax.Expr) syntax.Expr {
	switch e := e.(type) {
	case *syntax.BinaryExpr:
		e.X = guardExpr(e.X)
		e.Y = guardExpr(e.Y)
		if name, ok := binopGuardNames[e.Op]; ok && !cannotGrow(e.Op, e.X, e.Y) {
			return guardCall(name, e.OpPos, e.X, e.Y)
		}
	case *syntax.CallExpr:
		e.Fn = guardExpr(e.Fn)
		for i, a := range e.Args {
			switch a := a.(type) {
			case *syntax.BinaryExpr: // name=value
				if a.Op == syntax.EQ {
					a.Y = guardExpr(a.Y)
					continue
				}
			case *syntax.UnaryExpr: // *args, **kwargs
				if a.Op == syntax.STAR || a.Op == syntax.STARSTAR {
					a.X = guardExpr(a.X)
					continue
				}
			}
			e.Args[i] = guardExpr(a)
		}
	case *syntax.DotExpr:
		e.X = guardExpr(e.X)
		if guardedMethodNames[e.Name.Name] {
			return guardCall(guardAttr, e.Dot, e)
		}
	case *syntax.UnaryExpr:
		if e.X != nil {
			e.X = guardExpr(e.X)
		}
	case *syntax.ParenExpr:
		e.X = guardExpr(e.X)
	case *syntax.IndexExpr:
		e.X = guardExpr(e.X)
		e.Y = guardExpr(e.Y)
	case *syntax.SliceExpr:
		e.X = guardExpr(e.X)
		for _, p := range []*syntax.Expr{&e.Lo, &e.Hi, &e.Step} {
			if *p != nil {
				*p = guardExpr(*p)
			}
		}
	case *syntax.CondExpr:
		e.Cond = guardExpr(e.Cond)
		e.True = guardExpr(e.True)
		e.False = guardExpr(e.False)
	case *syntax.ListExpr:
		guardExprs(e.List)
	case *syntax.TupleExpr:
		guardExprs(e.List)
	case *syntax.DictExpr:
		guardExprs(e.List)
	case *syntax.DictEntry:
		e.Key = guardExpr(e.Key)
		e.Value = guardExpr(e.Value)
	case *syntax.Comprehension:
		e.Body = guardExpr(e.Body)
		for _, c := range e.Clauses {
			switch c := c.(type) {
			case *syntax.ForClause:
				guardTarget(c.Vars)
				c.X = guardExpr(c.X)
			case *syntax.IfClause:
				c.Cond = guardExpr(c.Cond)
			}
		}
	case *syntax.LambdaExpr:
		guardParams(e.Params)
		e.Body = guardExpr(e.Body)
	}
	return e
}

// guardCall is a call of a guard at pos: errors of the call name it.
func guardCall(name string, pos syntax.Position, args ...syntax.Expr) *syntax.CallExpr {
	return &syntax.CallExpr{Fn: &syntax.Ident{NamePos: pos, Name: name}, Lparen: pos, Args: args, Rparen: pos}
}

// guardAugmented guards x op= y (its operands are already guarded). The
// guard charges and returns y; the interpreter still does the operation,
// in place where Starlark does it in place.
func guardAugmented(s *syntax.AssignStmt) syntax.Stmt {
	g, ok := augGuardNames[s.Op]
	if !ok || augCannotGrow(s.Op, s.RHS) {
		return s
	}
	pos := s.OpPos
	switch t := unparen(s.LHS).(type) {
	case *syntax.Ident:
		s.RHS = guardCall(g.name, pos, cloneSimple(t), s.RHS)
		return s
	case *syntax.IndexExpr:
		if isSimple(t.X) && isSimple(t.Y) {
			read := &syntax.IndexExpr{X: cloneSimple(t.X), Lbrack: t.Lbrack, Y: cloneSimple(t.Y), Rbrack: t.Rbrack}
			s.RHS = guardCall(g.name, pos, read, s.RHS)
			return s
		}
		// for _lp_t in ((X, Y),): _lp_t[0][_lp_t[1]] op= guard(_lp_t[0][_lp_t[1]], y)
		target := func() syntax.Expr {
			return &syntax.IndexExpr{X: tempIndex(pos, 0), Lbrack: t.Lbrack, Y: tempIndex(pos, 1), Rbrack: t.Rbrack}
		}
		pair := &syntax.TupleExpr{Lparen: pos, List: []syntax.Expr{t.X, t.Y}, Rparen: pos}
		return tempLoop(s, pair, target)
	case *syntax.DotExpr:
		field := func(x syntax.Expr) syntax.Expr {
			return &syntax.DotExpr{X: x, Dot: t.Dot, NamePos: t.NamePos, Name: &syntax.Ident{NamePos: t.NamePos, Name: t.Name.Name}}
		}
		if isSimple(t.X) {
			s.RHS = guardCall(g.name, pos, field(cloneSimple(t.X)), s.RHS)
			return s
		}
		// for _lp_t in (X,): _lp_t.f op= guard(_lp_t.f, y)
		return tempLoop(s, t.X, func() syntax.Expr { return field(&syntax.Ident{NamePos: pos, Name: guardTemp}) })
	}
	return s
}

// tempLoop evaluates what the target of s needs once, binding it to
// guardTemp: for _lp_t in (bind,): target() op= guard(target(), y).
func tempLoop(s *syntax.AssignStmt, bind syntax.Expr, target func() syntax.Expr) syntax.Stmt {
	pos := s.OpPos
	g := augGuardNames[s.Op]
	body := &syntax.AssignStmt{OpPos: pos, Op: s.Op, LHS: target(), RHS: guardCall(g.name, pos, target(), s.RHS)}
	return &syntax.ForStmt{For: pos, Vars: &syntax.Ident{NamePos: pos, Name: guardTemp},
		X:    &syntax.TupleExpr{Lparen: pos, List: []syntax.Expr{bind}, Rparen: pos},
		Body: []syntax.Stmt{body}}
}

// tempIndex is _lp_t[i].
func tempIndex(pos syntax.Position, i int) syntax.Expr {
	return &syntax.IndexExpr{X: &syntax.Ident{NamePos: pos, Name: guardTemp}, Lbrack: pos,
		Y: &syntax.Literal{Token: syntax.INT, TokenPos: pos, Raw: fmt.Sprint(i), Value: int64(i)}, Rbrack: pos}
}

func unparen(e syntax.Expr) syntax.Expr {
	for {
		p, ok := e.(*syntax.ParenExpr)
		if !ok {
			return e
		}
		e = p.X
	}
}

// isSimple reports whether reading e twice is free of side effects and
// cheap: a name or a literal.
func isSimple(e syntax.Expr) bool {
	switch e.(type) {
	case *syntax.Ident, *syntax.Literal:
		return true
	}
	return false
}

// cloneSimple copies a name or literal: the resolver annotates each Ident.
func cloneSimple(e syntax.Expr) syntax.Expr {
	switch e := e.(type) {
	case *syntax.Ident:
		return &syntax.Ident{NamePos: e.NamePos, Name: e.Name}
	case *syntax.Literal:
		c := *e
		return &c
	}
	return e
}

// cannotGrow reports that x op y cannot allocate more than a constant
// beyond copying its operands, whatever they hold at run time, so it
// needs no guard (see guard.go).
func cannotGrow(op syntax.Token, x, y syntax.Expr) bool {
	switch op {
	case syntax.PLUS: // a number, or an error; two strings the compiler joins
		return isNumber(x) || isNumber(y) || isLiteral(x, syntax.STRING) && isLiteral(y, syntax.STRING)
	case syntax.STAR, syntax.LTLT:
		return isNumber(x) && isNumber(y)
	case syntax.PERCENT: // with a number or string, at most one %s
		return isNumber(y) || isLiteral(y, syntax.STRING) || isLiteral(y, syntax.BYTES)
	case syntax.PIPE:
		return isNumber(x) || isNumber(y)
	}
	return false
}

// augCannotGrow is cannotGrow for x op= y: also x += [...], which extends
// a list in place by as many elements as the display has.
func augCannotGrow(op syntax.Token, y syntax.Expr) bool {
	switch op {
	case syntax.PLUS_EQ:
		_, display := unparen(y).(*syntax.ListExpr)
		return display || isNumber(y)
	case syntax.PERCENT_EQ:
		return isNumber(y) || isLiteral(y, syntax.STRING) || isLiteral(y, syntax.BYTES)
	case syntax.PIPE_EQ:
		return isNumber(y)
	}
	return false
}

// isNumber reports whether e is a number literal, perhaps signed.
func isNumber(e syntax.Expr) bool {
	e = unparen(e)
	if u, ok := e.(*syntax.UnaryExpr); ok && (u.Op == syntax.MINUS || u.Op == syntax.PLUS) && u.X != nil {
		e = unparen(u.X)
	}
	return isLiteral(e, syntax.INT) || isLiteral(e, syntax.FLOAT)
}

func isLiteral(e syntax.Expr, tok syntax.Token) bool {
	l, ok := unparen(e).(*syntax.Literal)
	return ok && l.Token == tok
}
